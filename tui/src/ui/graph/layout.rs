//! A layered ("Sugiyama") layout for a terminal: callers on the left,
//! the services they call to the right.
//!
//! 1. Cycles are broken by turning DFS back edges around (they keep their
//!    arrow pointing the right way).
//! 2. Each node's layer is its longest path from a caller with no callers;
//!    such callers then move right, next to what they call.
//! 3. An edge that spans layers gets a placeholder in each layer between,
//!    so that it is drawn around boxes instead of through them.
//! 4. Each layer is ordered by the mean position of its neighbours, sweeping
//!    right and left a few times, which removes most crossings.
//! 5. Between two layers each edge runs right, turns in a channel of its
//!    own (one per source row, so edges from one node fan out as a tree),
//!    and runs right again into an arrow at its target.
//!
//! Coordinates are terminal cells; the drawing code clips to the screen.

use super::Step;

/// Rows of a node's box (border, name, border).
pub const BOX_HEIGHT: u32 = 3;
/// Names longer than this are cut (with an ellipsis) in the boxes.
pub const MAX_LABEL: u32 = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Top-left corner of the box.
    pub x: u32,
    pub y: u32,
    /// Width of the box, borders included.
    pub w: u32,
}

impl Placed {
    /// The row edges attach to.
    #[cfg(test)]
    pub fn middle(&self) -> u32 {
        self.y + 1
    }
}

/// A straight piece of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Horizontal { y: u32, x0: u32, x1: u32 },
    Vertical { x: u32, y0: u32, y1: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrow {
    pub x: u32,
    pub y: u32,
    /// Points right (into a box on its right) or left.
    pub right: bool,
    pub edge: usize,
}

#[derive(Debug, Default)]
pub struct Layout {
    /// Each node's box, by node index.
    pub nodes: Vec<Placed>,
    /// The nodes of each layer, top to bottom.
    pub layers: Vec<Vec<usize>>,
    pub layer_of: Vec<usize>,
    /// Each edge's pieces, with the index of the edge they belong to.
    pub segments: Vec<(usize, Segment)>,
    pub arrows: Vec<Arrow>,
    /// Nodes with an edge to themselves.
    pub self_loops: Vec<usize>,
    /// Whether edges attach to each node's left and right side.
    pub attached: Vec<(bool, bool)>,
    pub width: u32,
    pub height: u32,
}

impl Layout {
    pub fn first_node(&self) -> Option<usize> {
        self.layers.iter().find_map(|l| l.first().copied())
    }

    /// The node a step from `n` lands on: the next one up or down in its
    /// layer, or the nearest one in the next layer left or right that has
    /// nodes.
    pub fn neighbour(&self, n: usize, step: Step) -> Option<usize> {
        let layer = *self.layer_of.get(n)?;
        let here = &self.layers[layer];
        let i = here.iter().position(|m| *m == n)?;
        match step {
            Step::Up => i.checked_sub(1).map(|j| here[j]),
            Step::Down => here.get(i + 1).copied(),
            Step::Left | Step::Right => {
                let y = self.nodes[n].y;
                let mut l = layer;
                loop {
                    l = if step == Step::Left {
                        l.checked_sub(1)?
                    } else {
                        l + 1
                    };
                    let other = self.layers.get(l)?;
                    if let Some(m) = other.iter().min_by_key(|m| self.nodes[**m].y.abs_diff(y)) {
                        return Some(*m);
                    }
                }
            }
        }
    }
}

/// Lays out `widths.len()` nodes (each as wide as its label) and `edges`
/// between them. Edge `i` of the input is edge `i` in the result.
pub fn layout(widths: &[u32], edges: &[(usize, usize)]) -> Layout {
    let n = widths.len();
    let mut out = Layout {
        layer_of: vec![0; n],
        ..Default::default()
    };
    if n == 0 {
        return out;
    }
    let mut outgoing: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (i, &(a, b)) in edges.iter().enumerate() {
        if a == b {
            out.self_loops.push(a);
        } else {
            outgoing[a].push(i);
            indegree[b] += 1;
        }
    }

    // 1. Break cycles; remember the order nodes were found in.
    let mut state = vec![0u8; n]; // 0 new, 1 on the DFS path, 2 done
    let mut reversed = vec![false; edges.len()];
    let mut discovery = Vec::with_capacity(n);
    let roots = (0..n).filter(|v| indegree[*v] == 0).chain(0..n);
    for root in roots {
        if state[root] != 0 {
            continue;
        }
        state[root] = 1;
        discovery.push(root);
        let mut stack = vec![(root, 0usize)];
        while let Some(top) = stack.last_mut() {
            let v = top.0;
            if let Some(&e) = outgoing[v].get(top.1) {
                top.1 += 1;
                let w = edges[e].1;
                match state[w] {
                    0 => {
                        state[w] = 1;
                        discovery.push(w);
                        stack.push((w, 0));
                    }
                    1 => reversed[e] = true,
                    _ => {}
                }
            } else {
                state[v] = 2;
                stack.pop();
            }
        }
    }
    // The acyclic edges: (edge, from, to).
    let dag: Vec<(usize, usize, usize)> = edges
        .iter()
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, &(a, b))| if reversed[i] { (i, b, a) } else { (i, a, b) })
        .collect();

    // 2. Longest-path layers.
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pred_count = vec![0usize; n];
    for &(_, a, b) in &dag {
        succ[a].push(b);
        pred_count[b] += 1;
    }
    let has_pred: Vec<bool> = pred_count.iter().map(|c| *c > 0).collect();
    let mut layer = vec![0usize; n];
    let mut ready: std::collections::VecDeque<usize> = discovery
        .iter()
        .copied()
        .filter(|v| pred_count[*v] == 0)
        .collect();
    while let Some(u) = ready.pop_front() {
        for &w in &succ[u] {
            layer[w] = layer[w].max(layer[u] + 1);
            pred_count[w] -= 1;
            if pred_count[w] == 0 {
                ready.push_back(w);
            }
        }
    }
    for v in 0..n {
        if !has_pred[v]
            && let Some(min) = succ[v].iter().map(|w| layer[*w]).min()
        {
            layer[v] = min - 1;
        }
    }

    // 3. Placeholders for long edges. Items 0..n are the nodes.
    let mut item_layer = layer.clone();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    // Links between adjacent layers: (from item, to item, edge).
    let mut links = Vec::with_capacity(dag.len());
    // The edge each placeholder belongs to, by item - n.
    let mut placeholder_edge = Vec::new();
    for &(e, a, b) in &dag {
        let mut prev = a;
        for l in layer[a] + 1..layer[b] {
            let d = item_layer.len();
            item_layer.push(l);
            placeholder_edge.push(e);
            preds.push(Vec::new());
            succs.push(Vec::new());
            links.push((prev, d, e));
            prev = d;
        }
        links.push((prev, b, e));
    }
    for &(a, b, _) in &links {
        succs[a].push(b);
        preds[b].push(a);
    }
    let items = item_layer.len();
    let layer_count = layer.iter().max().map_or(1, |m| m + 1);

    // 4. Order each layer.
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layer_count];
    for &v in &discovery {
        layers[layer[v]].push(v);
    }
    for d in n..items {
        layers[item_layer[d]].push(d);
    }
    let mut pos = vec![0f64; items];
    let number = |layers: &Vec<Vec<usize>>, pos: &mut Vec<f64>, l: usize| {
        for (i, v) in layers[l].iter().enumerate() {
            pos[*v] = i as f64;
        }
    };
    for l in 0..layer_count {
        number(&layers, &mut pos, l);
    }
    let reorder =
        |layers: &mut Vec<Vec<usize>>, pos: &mut Vec<f64>, l: usize, nbrs: &Vec<Vec<usize>>| {
            let key: Vec<(usize, f64)> = layers[l]
                .iter()
                .map(|&v| {
                    let k = if nbrs[v].is_empty() {
                        pos[v]
                    } else {
                        nbrs[v].iter().map(|u| pos[*u]).sum::<f64>() / nbrs[v].len() as f64
                    };
                    (v, k)
                })
                .collect();
            let mut key = key;
            key.sort_by(|a, b| a.1.total_cmp(&b.1));
            layers[l] = key.into_iter().map(|(v, _)| v).collect();
            for (i, v) in layers[l].iter().enumerate() {
                pos[*v] = i as f64;
            }
        };
    for _ in 0..3 {
        for l in 1..layer_count {
            reorder(&mut layers, &mut pos, l, &preds);
        }
        for l in (0..layer_count.saturating_sub(1)).rev() {
            reorder(&mut layers, &mut pos, l, &succs);
        }
    }

    // 5. Rows and columns.
    let layer_width: Vec<u32> = layers
        .iter()
        .map(|l| {
            l.iter()
                .filter(|v| **v < n)
                .map(|v| widths[*v].min(MAX_LABEL) + 4)
                .max()
                .unwrap_or(1)
        })
        .collect();
    let item_height = |v: usize| if v < n { BOX_HEIGHT + 1 } else { 2 };
    let heights: Vec<u32> = layers
        .iter()
        .map(|l| l.iter().map(|v| item_height(*v)).sum())
        .collect();
    let height = heights.iter().copied().max().unwrap_or(0);
    // The row each item's edges attach to.
    let mut row = vec![0u32; items];
    for (l, vs) in layers.iter().enumerate() {
        let mut y = (height - heights[l]) / 2;
        for &v in vs {
            row[v] = if v < n { y + 1 } else { y };
            y += item_height(v);
        }
    }
    // Channels: one per distinct source row that turns, per gap.
    let mut by_gap: Vec<Vec<(u32, u32, usize, usize)>> = vec![Vec::new(); layer_count];
    for &(a, b, e) in &links {
        by_gap[item_layer[a]].push((row[a], row[b], a, e));
    }
    let mut gap_width = vec![0u32; layer_count];
    let mut channel_rows: Vec<Vec<u32>> = vec![Vec::new(); layer_count];
    for l in 0..layer_count {
        let mut rows: Vec<u32> = by_gap[l]
            .iter()
            .filter(|(ya, yb, _, _)| ya != yb)
            .map(|(ya, _, _, _)| *ya)
            .collect();
        rows.sort_unstable();
        rows.dedup();
        gap_width[l] = (rows.len() as u32 + 2).clamp(4, 12);
        channel_rows[l] = rows;
    }
    let mut x = vec![0u32; layer_count];
    for l in 1..layer_count {
        x[l] = x[l - 1] + layer_width[l - 1] + gap_width[l - 1];
    }

    out.nodes = (0..n)
        .map(|v| Placed {
            x: x[layer[v]],
            y: row[v] - 1,
            w: layer_width[layer[v]],
        })
        .collect();
    for d in n..items {
        let l = item_layer[d];
        out.segments.push((
            placeholder_edge[d - n],
            Segment::Horizontal {
                y: row[d],
                x0: x[l],
                x1: x[l] + layer_width[l] - 1,
            },
        ));
    }
    for (l, gap) in by_gap.iter().enumerate() {
        let start = x[l] + layer_width[l];
        let last = start + gap_width[l] - 1;
        let channels = gap_width[l] - 2;
        for &(ya, yb, _, e) in gap {
            if ya == yb {
                out.segments.push((
                    e,
                    Segment::Horizontal {
                        y: ya,
                        x0: start,
                        x1: last,
                    },
                ));
                continue;
            }
            let k = channel_rows[l].binary_search(&ya).unwrap_or(0) as u32;
            let cx = start + 1 + k % channels;
            out.segments.push((
                e,
                Segment::Horizontal {
                    y: ya,
                    x0: start,
                    x1: cx,
                },
            ));
            out.segments.push((
                e,
                Segment::Vertical {
                    x: cx,
                    y0: ya.min(yb),
                    y1: ya.max(yb),
                },
            ));
            out.segments.push((
                e,
                Segment::Horizontal {
                    y: yb,
                    x0: cx,
                    x1: last,
                },
            ));
        }
    }
    out.attached = vec![(false, false); n];
    for &(e, a, b) in &dag {
        out.attached[a].1 = true;
        out.attached[b].0 = true;
        out.arrows.push(if reversed[e] {
            Arrow {
                x: x[layer[a]] + layer_width[layer[a]],
                y: row[a],
                right: false,
                edge: e,
            }
        } else {
            Arrow {
                x: x[layer[b]] - 1,
                y: row[b],
                right: true,
                edge: e,
            }
        });
    }
    out.layers = layers
        .into_iter()
        .map(|l| l.into_iter().filter(|v| *v < n).collect())
        .collect();
    out.layer_of = layer;
    out.width = x[layer_count - 1] + layer_width[layer_count - 1];
    out.height = height;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_left_of_what_they_call() {
        // world -> frontend -> cart -> db, frontend -> db
        let l = layout(&[5, 8, 4, 2], &[(0, 1), (1, 2), (2, 3), (1, 3)]);
        let x = |n: usize| l.nodes[n].x;
        assert!(x(0) < x(1) && x(1) < x(2) && x(2) < x(3));
        // The long edge frontend -> db goes around cart through a
        // placeholder row, and every edge ends in a right arrow.
        assert_eq!(l.arrows.len(), 4);
        assert!(l.arrows.iter().all(|a| a.right));
        for a in &l.arrows {
            let target = [1, 2, 3, 3][a.edge];
            assert_eq!(a.x + 1, x(target));
            assert_eq!(a.y, l.nodes[target].middle());
        }
    }

    #[test]
    fn cycles_keep_their_direction() {
        let l = layout(&[1, 1], &[(0, 1), (1, 0), (1, 1)]);
        assert_eq!(l.self_loops, vec![1]);
        let left: Vec<bool> = l.arrows.iter().map(|a| a.right).collect();
        assert_eq!(left, vec![true, false]);
        assert_eq!(l.neighbour(0, Step::Right), Some(1));
        assert_eq!(l.neighbour(1, Step::Left), Some(0));
        assert_eq!(l.neighbour(1, Step::Right), None);
    }

    #[test]
    fn boxes_never_overlap() {
        // A fan-out of 30 clients to 5 servers and a chain behind them.
        let mut edges = Vec::new();
        for c in 0..30 {
            edges.push((c, 30 + c % 5));
        }
        for s in 30..34 {
            edges.push((s, s + 1));
        }
        let l = layout(&[10; 35], &edges);
        for (i, a) in l.nodes.iter().enumerate() {
            for b in &l.nodes[i + 1..] {
                let apart = a.x + a.w <= b.x
                    || b.x + b.w <= a.x
                    || a.y + BOX_HEIGHT <= b.y
                    || b.y + BOX_HEIGHT <= a.y;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
        }
        // Clients sit next to the server they call.
        for c in 0..30 {
            assert_eq!(l.layer_of[c] + 1, l.layer_of[30 + c % 5]);
        }
    }
}
