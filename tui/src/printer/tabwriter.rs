//! Go's `text/tabwriter`, as `hubble observe -o table` aligns with it
//! (minimum width 2, padding 3, spaces, no flags).
//!
//! Two rules make its output differ from other aligners, and a Hubble
//! user's table must look the same: a cell's width is its number of
//! characters (not its display width), and a line with no tab (a summary
//! continued after a newline in a URL, say) ends the block of lines aligned
//! together, so the lines after it are aligned on their own.

use std::io::{self, Write};

pub struct TabWriter<W: Write> {
    out: W,
    minwidth: usize,
    padding: usize,
    /// Text of the line being written, until its newline.
    partial: Vec<u8>,
    /// Complete lines not yet aligned, each as its cells.
    lines: Vec<Vec<String>>,
    /// Bytes held in `lines`.
    held: usize,
}

impl<W: Write> TabWriter<W> {
    pub fn new(out: W, minwidth: usize, padding: usize) -> Self {
        Self {
            out,
            minwidth,
            padding,
            partial: Vec::new(),
            lines: Vec::new(),
            held: 0,
        }
    }

    /// Bytes written but not yet aligned and passed on.
    pub fn held(&self) -> usize {
        self.held + self.partial.len()
    }

    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }

    fn end_line(&mut self) -> io::Result<()> {
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        let cells: Vec<String> = text.split('\t').map(str::to_owned).collect();
        let single = cells.len() == 1;
        self.held += text.len() + 1;
        self.lines.push(cells);
        // A line of one cell cannot change how later lines align (the
        // last cell of a line is never aligned): Go's writer flushes here.
        if single {
            self.align()?;
        }
        Ok(())
    }

    /// Aligns and writes out every complete line held.
    fn align(&mut self) -> io::Result<()> {
        let lines = std::mem::take(&mut self.lines);
        self.held = 0;
        let mut out = String::new();
        let mut widths = Vec::new();
        self.format(&lines, &mut widths, 0, lines.len(), &mut out);
        self.out.write_all(out.as_bytes())
    }

    /// Go's recursive column-block formatting of `lines[line0..line1]`.
    fn format(
        &self,
        lines: &[Vec<String>],
        widths: &mut Vec<usize>,
        mut line0: usize,
        line1: usize,
        out: &mut String,
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            // A block of lines with a cell in this column starts here.
            write_lines(lines, widths, line0, this, out);
            line0 = this;
            let mut width = self.minwidth;
            while this < line1 && column + 1 < lines[this].len() {
                width = width.max(lines[this][column].chars().count() + self.padding);
                this += 1;
            }
            widths.push(width);
            self.format(lines, widths, line0, this, out);
            widths.pop();
            line0 = this;
        }
        write_lines(lines, widths, line0, line1, out);
    }
}

fn write_lines(lines: &[Vec<String>], widths: &[usize], from: usize, to: usize, out: &mut String) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j < widths.len() && j + 1 < line.len() {
                let w = cell.chars().count();
                out.extend(std::iter::repeat_n(' ', widths[j].saturating_sub(w)));
            }
        }
        out.push('\n');
    }
}

impl<W: Write> Write for TabWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..i]);
            self.end_line()?;
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    /// Aligns what is held and writes it out; a line without its newline
    /// yet stays held.
    fn flush(&mut self) -> io::Result<()> {
        self.align()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> String {
        let mut w = TabWriter::new(Vec::new(), 2, 3);
        w.write_all(text.as_bytes()).unwrap();
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    #[test]
    fn aligns_as_go_does() {
        assert_eq!(
            table("a\tbb\tc\nccc\td\te\n"),
            "a     bb   c\nccc   d    e\n"
        );
        // Widths count characters, not display columns.
        assert_eq!(table("日本\tx\nab\ty\n"), "日本   x\nab   y\n");
        // A line with no tab ends the block: the lines after it align anew.
        assert_eq!(
            table("a\tx\nlong-cell\ty\nplain\nb\tz\n"),
            "a           x\nlong-cell   y\nplain\nb   z\n"
        );
        // Lines with fewer cells split a column into blocks.
        assert_eq!(
            table("a\tb\tc\nd\te\nfff\tg\th\n"),
            "a     b   c\nd     e\nfff   g   h\n"
        );
    }
}
