//! Reading a capture on every core: a reader thread cuts the input into
//! chunks of whole lines, workers parse, filter and format each chunk into
//! memory, and the caller's thread writes the chunks back in input order.
//! JSON parsing dominates the cost of `--input-file`, and it is independent
//! per line.

use std::{
    io::{BufRead, Write},
    path::Path,
    sync::mpsc::{Receiver, SyncSender, sync_channel},
};

use super::Window;
use crate::printer::{self, Printer};

/// Bytes of input per chunk: big enough to amortise the hand-offs, small
/// enough that the first lines of a pipe show up at once.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks in flight per worker.
const DEPTH: usize = 2;

struct Chunk {
    text: String,
}

struct Done {
    out: Vec<u8>,
    err: Vec<u8>,
    /// The chunk's first record went to stderr.
    err_first: bool,
    /// Where in `err` the chunk's warning about a field or value this build
    /// does not know is (Hubble warns once per capture).
    unknown: Option<std::ops::Range<usize>>,
}

pub(super) fn run<W: Write, E: Write>(
    mut reader: Box<dyn BufRead + Send>,
    path: &Path,
    window: &Window<'_>,
    printer: &mut Printer<W, E>,
) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let name = path.display().to_string();
    let opts = printer.options();
    std::thread::scope(|scope| {
        let mut inputs: Vec<SyncSender<Chunk>> = Vec::with_capacity(workers);
        let mut outputs: Vec<Receiver<Done>> = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (in_tx, in_rx) = sync_channel::<Chunk>(DEPTH);
            let (out_tx, out_rx) = sync_channel::<Done>(DEPTH);
            inputs.push(in_tx);
            outputs.push(out_rx);
            scope.spawn(move || {
                for chunk in in_rx {
                    if out_tx.send(work(&chunk, window, opts)).is_err() {
                        return;
                    }
                }
            });
        }
        // The reader deals chunks round-robin; the writer collects them in
        // the same order, which keeps the output in input order.
        let reader_thread = scope.spawn(move || -> std::io::Result<()> {
            for i in 0.. {
                let mut text = String::with_capacity(CHUNK_BYTES + 4096);
                while text.len() < CHUNK_BYTES {
                    if reader.read_line(&mut text)? == 0 {
                        break;
                    }
                }
                if text.is_empty() {
                    return Ok(());
                }
                if inputs[i % workers].send(Chunk { text }).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        let written = (|| -> anyhow::Result<()> {
            let mut warned = false;
            for i in 0.. {
                let Ok(mut done) = outputs[i % workers].recv() else {
                    return Ok(());
                };
                if let Some(r) = done.unknown.take() {
                    if warned {
                        done.err.drain(r);
                    }
                    warned = true;
                }
                printer.write_chunk(&done.out, &done.err, done.err_first)?;
            }
            Ok(())
        })();
        // Hanging up stops the workers and then the reader.
        drop(outputs);
        let read = reader_thread.join().unwrap_or(Ok(()));
        written?;
        read.map_err(|e| anyhow::anyhow!("--input-file {name}: {e}"))
    })
}

fn work(chunk: &Chunk, window: &Window<'_>, opts: printer::Options) -> Done {
    let mut p = Printer::<Vec<u8>, Vec<u8>>::for_chunk(opts);
    let mut unknown = None;
    // Writing to memory cannot fail.
    for line in chunk.text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match webb_proto::json::parse_line_noting(line) {
            Ok(parsed) => {
                if let Some(what) = parsed.unknown.filter(|_| unknown.is_none()) {
                    let start = p.err_bytes();
                    let _ = p.log(&super::unknown_warning(&what));
                    unknown = Some(start..p.err_bytes());
                }
                if window.keeps(&parsed.response) {
                    let _ = p.write(&parsed.response);
                }
            }
            // As Hubble's reader: the line is named in a warning, skipped,
            // and reading goes on.
            Err(e) => {
                let _ = p.log(&super::bad_line_warning(&e, line));
            }
        }
    }
    let err_first = p.err_first();
    let (out, err) = p.into_buffers();
    Done {
        out,
        err,
        err_first,
        unknown,
    }
}
