//! `cargo bench -p webb-proto --bench codec`: the per-flow cost of what a
//! client does with each response, on one thread: protobuf decode (what
//! every gRPC client pays; then with `ResponseDecoder`, which `webb observe`
//! uses), the JSON line (`-o json`, also with shared endpoints), and JSON parsing
//! (`--input-file`), and field masks (bytes on the wire, the agent's cost
//! per masked flow). The flows are `examples/demo.jsonl`, 30 s of the demo
//! lab (L3/L4, drops, DNS and HTTP).

use std::time::Instant;

use prost::Message as _;
use webb_proto::{json, mask, observer::GetFlowsResponse};

/// The allocator of the webb binaries.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.jsonl");
    let text = std::fs::read_to_string(path).expect("examples/demo.jsonl");
    let responses: Vec<GetFlowsResponse> = json::read_lines(text.as_bytes())
        .collect::<Result<_, _>>()
        .expect("the capture parses");
    let encoded: Vec<Vec<u8>> = responses.iter().map(|r| r.encode_to_vec()).collect();
    let lines: Vec<String> = responses.iter().map(json::to_line).collect();
    let n = responses.len();
    let wire: usize = encoded.iter().map(Vec::len).sum();
    println!(
        "{n} responses, {} bytes each on the wire, {} as JSON (averages)",
        wire / n,
        lines.iter().map(String::len).sum::<usize>() / n
    );
    let passes = 20;
    // `-- WORD`: only the measures whose name contains WORD.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let best = |what: &str, f: &mut dyn FnMut() -> usize| {
        if !only.is_empty() && !only.iter().any(|w| what.contains(w.as_str())) {
            return;
        }
        let mut best = f64::MAX;
        let mut check = 0;
        for _ in 0..passes {
            let start = Instant::now();
            check += f();
            best = best.min(start.elapsed().as_secs_f64());
        }
        let per = best / n as f64 * 1e9;
        println!(
            "{what:<34} {per:7.0} ns/flow  {:>9.0} flows/s  (best of {passes}; check {check})",
            1e9 / per
        );
    };
    best("protobuf decode", &mut || {
        encoded
            .iter()
            .map(|b| GetFlowsResponse::decode(b.as_slice()).map_or(0, |r| r.node_name.len()))
            .sum()
    });
    let mut decoder = webb_proto::decoder::ResponseDecoder::new();
    best("protobuf decode, shared endpoints", &mut || {
        encoded
            .iter()
            .map(|b| decoder.decode(b).map_or(0, |r| r.node_name.len()))
            .sum()
    });
    let mut buf = Vec::with_capacity(4 << 20);
    best("JSON line (-o json)", &mut || {
        buf.clear();
        for r in &responses {
            json::append_line(&mut buf, r);
            buf.push(b'\n');
        }
        buf.len()
    });
    // What `webb observe -o json` does: shared endpoints from the decoder,
    // and their JSON written once.
    let shared: Vec<GetFlowsResponse> = encoded
        .iter()
        .map(|b| decoder.decode(b).expect("decodes"))
        .collect();
    let mut writer = json::LineWriter::default();
    best("JSON line, shared endpoints", &mut || {
        buf.clear();
        for r in &shared {
            writer.append_line(&mut buf, r);
            buf.push(b'\n');
        }
        buf.len()
    });
    // The generated serde code alone, for comparison: what the line cost
    // before the hand-written writer.
    best("JSON via serde (the flow only)", &mut || {
        buf.clear();
        for r in &responses {
            if let Some(webb_proto::observer::get_flows_response::ResponseTypes::Flow(f)) =
                &r.response_types
            {
                let _ = serde_json::to_writer(&mut buf, f);
            }
            buf.push(b'\n');
        }
        buf.len()
    });
    best("JSON parse (--input-file)", &mut || {
        lines
            .iter()
            .map(|l| json::parse_line(l).map_or(0, |r| r.node_name.len()))
            .sum()
    });
    // Field masks, as the agent applies them: the bytes each response
    // takes on the wire whole and masked, and the agent's cost per flow
    // (a whole clone, which an unmasked stream pays, against building the
    // masked flow).
    for (name, paths) in [
        ("webb text", &mask::webb_text()[..]),
        ("hubble text", mask::HUBBLE_TEXT),
        ("time,verdict", &["time", "verdict"][..]),
    ] {
        let m = std::sync::Arc::new(mask::FlowMask::new(paths).unwrap().unwrap());
        let mut masker = m.masker();
        let bytes: usize = responses
            .iter()
            .map(|r| masker.response(r).encoded_len())
            .sum();
        println!(
            "field mask {name:<12} {} bytes per response on the wire ({:.2} of whole)",
            bytes / n,
            bytes as f64 / wire as f64
        );
    }
    best("agent: whole response (clone)", &mut || {
        responses.iter().map(|r| r.clone().node_name.len()).sum()
    });
    let m = std::sync::Arc::new(mask::FlowMask::new(&mask::webb_text()).unwrap().unwrap());
    let mut masker = m.masker();
    best("agent: masked response (webb text)", &mut || {
        responses
            .iter()
            .map(|r| masker.response(r).node_name.len())
            .sum()
    });
}
