//! Compiles `proto/**/*.proto` with protox (a pure-Rust protobuf compiler, so a
//! fresh machine needs no system `protoc`), then generates prost types, tonic
//! clients and servers, and pbjson serde impls that write JSON the way Hubble
//! does (original proto field names, enums as names).

use std::{env, path::PathBuf};

use prost::Message as _;

const PROTOS: &[&str] = &[
    "proto/flow/flow.proto",
    "proto/relay/relay.proto",
    "proto/peer/peer.proto",
    "proto/observer/observer.proto",
    "proto/shared/shared.proto",
    "proto/webb/analysis.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["proto"])?;
    let descriptor_path = out_dir.join("webb_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;
    std::fs::write(out_dir.join("mask_schema.rs"), mask_schema(&fds))?;
    std::fs::write(out_dir.join("cel_schema.rs"), cel_schema(&fds))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        // A Flow lives in the agent's ring tens of thousands of times; its
        // rarely-set nested messages are boxed so that, absent, they cost a
        // pointer instead of their full size inline.
        .boxed(".flow.Flow.tunnel")
        .boxed(".flow.Flow.l7")
        .boxed(".flow.Flow.file")
        .boxed(".flow.Flow.trace_context")
        .boxed(".flow.Flow.ip_trace_id")
        .boxed(".flow.Flow.source_service")
        .boxed(".flow.Flow.destination_service")
        .boxed(".flow.Flow.aggregate")
        .boxed(".flow.Flow.extensions")
        // Responses are mostly flows; boxing the member keeps the ring entry
        // small and puts the Flow in its own 1 KiB allocation.
        .boxed(".observer.GetFlowsResponse.response_types.flow")
        .extern_path(".google.protobuf", "crate::wkt")
        // Every flow of an endpoint carries the same Endpoint: the Rust type
        // is a shared pointer to the fields (`crate::endpoint`), so a ring of
        // flows holds each endpoint's names and labels once.
        .extern_path(".flow.Endpoint", "crate::endpoint::Endpoint")
        .type_attribute(".shared.EndpointData", "#[derive(Eq, Hash)]")
        // A handful of buckets per pair, merged across 100 nodes' answers:
        // a small ordered map costs less than a SipHash table.
        .btree_map(".webb.analysis.TopPair.latency_buckets")
        .compile_fds(fds.clone())?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .extern_path(".flow.Endpoint", "crate::endpoint::Endpoint")
        .exclude([".flow.Endpoint"])
        .build(&[".flow", ".observer", ".peer", ".relay", ".shared"])?;
    for package in ["flow", "observer", "peer", "relay", "shared"] {
        open_reading(&out_dir.join(format!("{package}.serde.rs")))?;
    }
    Ok(())
}

/// Every message's fields (name, number, message type, repeated, wire type) as a
/// static table, for `crate::mask` to resolve field-mask paths by name and
/// filter encoded messages by number without a descriptor at run time.
fn mask_schema(fds: &prost_types::FileDescriptorSet) -> String {
    fn walk(prefix: &str, m: &prost_types::DescriptorProto, out: &mut String) {
        use prost_types::field_descriptor_proto::{Label, Type};
        let name = format!("{prefix}.{}", m.name());
        out.push_str(&format!("    ({name:?}, &[\n"));
        for f in &m.field {
            let message = if f.r#type() == Type::Message {
                f.type_name().trim_start_matches('.')
            } else {
                ""
            };
            let repeated = f.label() == Label::Repeated;
            // The wire type of one value (tests build messages from it).
            let wire = match f.r#type() {
                Type::Double | Type::Fixed64 | Type::Sfixed64 => 1,
                Type::Float | Type::Fixed32 | Type::Sfixed32 => 5,
                Type::String | Type::Bytes | Type::Message | Type::Group => 2,
                _ => 0,
            };
            out.push_str(&format!(
                "        ({:?}, {}, {message:?}, {repeated}, {wire}),\n",
                f.name(),
                f.number()
            ));
        }
        out.push_str("    ]),\n");
        for nested in &m.nested_type {
            walk(&name, nested, out);
        }
    }
    let mut out = String::from(
        "/// (message, [(field, number, message type or \"\", repeated, wire type)])\n\
         pub(crate) static SCHEMA: &[(&str, &[Field])] = &[\n",
    );
    for file in &fds.file {
        for m in &file.message_type {
            walk(file.package(), m, &mut out);
        }
    }
    out.push_str("];\n");
    out
}

/// Every message's fields with their CEL type, for the CEL filter's type
/// check and values (`crate::filter::cel`): `bool`, `int`, `enum:NAME`, `uint`,
/// `double`, `string`, `bytes`, `timestamp`, `duration`, `dyn`, `map`,
/// `wrapper:T` (google.protobuf.*Value), `msg:NAME`, and `list:` before any
/// of them for a repeated field.
fn cel_schema(fds: &prost_types::FileDescriptorSet) -> String {
    use prost_types::field_descriptor_proto::{Label, Type};
    fn walk(
        prefix: &str,
        m: &prost_types::DescriptorProto,
        maps: &std::collections::HashSet<String>,
        out: &mut String,
    ) {
        let name = format!("{prefix}.{}", m.name());
        out.push_str(&format!("    ({name:?}, &[\n"));
        for f in &m.field {
            let type_name = f.type_name().trim_start_matches('.');
            let t = match f.r#type() {
                Type::Double | Type::Float => "double".to_owned(),
                Type::Int32
                | Type::Int64
                | Type::Sint32
                | Type::Sint64
                | Type::Sfixed32
                | Type::Sfixed64 => "int".to_owned(),
                Type::Enum => format!("enum:{type_name}"),
                Type::Uint32 | Type::Uint64 | Type::Fixed32 | Type::Fixed64 => "uint".to_owned(),
                Type::Bool => "bool".to_owned(),
                Type::String => "string".to_owned(),
                Type::Bytes => "bytes".to_owned(),
                Type::Message | Type::Group => match type_name {
                    "google.protobuf.BoolValue" => "wrapper:bool".to_owned(),
                    "google.protobuf.Int32Value" | "google.protobuf.Int64Value" => {
                        "wrapper:int".to_owned()
                    }
                    "google.protobuf.UInt32Value" | "google.protobuf.UInt64Value" => {
                        "wrapper:uint".to_owned()
                    }
                    "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => {
                        "wrapper:double".to_owned()
                    }
                    "google.protobuf.StringValue" => "wrapper:string".to_owned(),
                    "google.protobuf.BytesValue" => "wrapper:bytes".to_owned(),
                    "google.protobuf.Timestamp" => "timestamp".to_owned(),
                    "google.protobuf.Duration" => "duration".to_owned(),
                    "google.protobuf.Any" | "google.protobuf.Value" => "dyn".to_owned(),
                    "google.protobuf.Struct" => "map".to_owned(),
                    t if maps.contains(t) => "map".to_owned(),
                    t => format!("msg:{t}"),
                },
            };
            let repeated = f.label() == Label::Repeated && !t.starts_with("map");
            let t = if repeated { format!("list:{t}") } else { t };
            out.push_str(&format!("        ({:?}, {t:?}),\n", f.name()));
        }
        out.push_str("    ]),\n");
        for nested in &m.nested_type {
            walk(&name, nested, maps, out);
        }
    }
    fn map_entries(
        prefix: &str,
        m: &prost_types::DescriptorProto,
        out: &mut std::collections::HashSet<String>,
    ) {
        let name = format!("{prefix}.{}", m.name());
        if m.options.as_ref().is_some_and(|o| o.map_entry()) {
            out.insert(name.clone());
        }
        for nested in &m.nested_type {
            map_entries(&name, nested, out);
        }
    }
    let mut maps = std::collections::HashSet::new();
    for file in &fds.file {
        for m in &file.message_type {
            map_entries(file.package(), m, &mut maps);
        }
    }
    let mut out = String::from(
        "/// (message, [(field, CEL type)])\n\
         pub(crate) static CEL_SCHEMA: &[(&str, &[(&str, &str)])] = &[\n",
    );
    for file in &fds.file {
        for m in &file.message_type {
            walk(file.package(), m, &maps, &mut out);
        }
    }
    out.push_str("];\n");
    // Enums, top-level and nested, with their value names.
    fn enums(prefix: &str, m: &prost_types::DescriptorProto, out: &mut String) {
        let name = format!("{prefix}.{}", m.name());
        for e in &m.enum_type {
            enum_line(&name, e, out);
        }
        for nested in &m.nested_type {
            enums(&name, nested, out);
        }
    }
    fn enum_line(prefix: &str, e: &prost_types::EnumDescriptorProto, out: &mut String) {
        let values: Vec<String> = e
            .value
            .iter()
            .map(|v| format!("({:?}, {})", v.name(), v.number()))
            .collect();
        out.push_str(&format!(
            "    (\"{prefix}.{}\", &[{}]),\n",
            e.name(),
            values.join(", ")
        ));
    }
    out.push_str(
        "/// (enum, [(value name, number)])\n\
         pub(crate) static CEL_ENUMS: &[(&str, &[(&str, i32)])] = &[\n",
    );
    for file in &fds.file {
        for e in &file.enum_type {
            enum_line(file.package(), e, &mut out);
        }
        for m in &file.message_type {
            enums(file.package(), m, &mut out);
        }
    }
    out.push_str("];\n");
    out
}

/// Makes pbjson's generated readers read as Hubble's reader does
/// (`crate::json::open`): an enum field takes any number and, by name, an
/// unknown name is noted and left at zero; an unknown field is noted and
/// skipped; numbers are read as protojson reads them (`GoNumber`). And its
/// writers write an enum number without a name as the number, as protojson
/// does. The generated code is pbjson-build 0.9's; the build fails if
/// its shape changes and nothing was rewritten.
fn open_reading(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = String::with_capacity(text.len() + 4096);
    let mut field = String::new();
    let (mut enums, mut unknown, mut written, mut numbers) = (0, 0, 0, 0);
    for line in text.lines() {
        if let Some(rest) = line.split("duplicate_field(\"").nth(1) {
            field = rest.split('"').next().unwrap_or_default().to_owned();
        }
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some((lhs, rest)) = trimmed.split_once("= Some(map_.next_value::<")
            && let Some(ty) = rest.strip_suffix(">()? as i32);")
        {
            out.push_str(&format!(
                "{indent}{lhs}= Some(crate::json::open::enum_value::<{ty}, _>(&mut map_, \"{field}\")?);\n"
            ));
            enums += 1;
        } else if let Some((lhs, rest)) = trimmed.split_once("= Some(map_.next_value::<Vec<")
            && let Some(ty) = rest.strip_suffix(">>()?.into_iter().map(|x| x as i32).collect());")
        {
            out.push_str(&format!(
                "{indent}{lhs}= Some(crate::json::open::enum_values::<{ty}, _>(&mut map_, \"{field}\")?);\n"
            ));
            enums += 1;
        } else if let Some(rest) = trimmed
            .strip_prefix(".map_err(|_| serde::ser::Error::custom(format!(\"Invalid variant {}\", ")
            && let Some(value) = rest
                .strip_suffix(")))?;")
                .or_else(|| rest.strip_suffix(")))"))
        {
            // Writing: an enum number this build has no name for is written
            // as the number, as protojson writes it (not an error).
            let end = if rest.ends_with('?') || rest.ends_with(";") {
                ";"
            } else {
                ""
            };
            out.push_str(&format!(
                "{indent}.map_or_else(|_| crate::json::open::EnumOut::Number({value}), crate::json::open::EnumOut::Name){end}\n"
            ));
            written += 1;
        } else if trimmed == "}).collect::<std::result::Result<Vec<_>, _>>()?;" {
            out.push_str(&format!("{indent}}}).collect::<Vec<_>>();\n"));
        } else if trimmed == "_ => Ok(GeneratedField::__SkipField__)," {
            out.push_str(&format!(
                "{indent}_ => {{ crate::json::open::unknown_field(value); Ok(GeneratedField::__SkipField__) }}\n"
            ));
            unknown += 1;
        } else if line.contains("::pbjson::private::NumberDeserialize<") {
            out.push_str(&line.replace(
                "::pbjson::private::NumberDeserialize<",
                "crate::json::open::GoNumber<",
            ));
            out.push('\n');
            numbers += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let name = path.display();
    if text.contains("NumberDeserialize") && numbers == 0 {
        return Err(format!("{name}: no number reader rewritten; pbjson's output changed").into());
    }
    if text.contains(" as i32") && enums == 0 {
        return Err(format!("{name}: no enum field rewritten; pbjson's output changed").into());
    }
    if text.contains("Invalid variant") && written == 0 {
        return Err(format!("{name}: no enum writer rewritten; pbjson's output changed").into());
    }
    if text.contains("__SkipField__") && unknown == 0 {
        return Err(
            format!("{name}: no unknown-field arm rewritten; pbjson's output changed").into(),
        );
    }
    std::fs::write(path, out)?;
    Ok(())
}
