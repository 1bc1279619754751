//! A picture of one key's history for a person to look at: an SVG timeline with one
//! lane per client, each operation a bar from call to return (dashed to the end of the
//! run when its outcome is unknown), labelled with what it did and saw. When the
//! checker found no order, the operations of the longest consistent order it found are
//! numbered in that order and drawn green, and the one it could not place is red.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::history::{Answer, Call, Op, Outcome};

const LANE: f64 = 48.0;
const LEFT: f64 = 90.0;
const WIDTH: f64 = 1400.0;

/// The SVG of the operations in `ops` (all of one key). `order`: a consistent order
/// found by the checker (history ids); `stuck`: the operation it could not place.
pub fn svg(title: &str, ops: &[&Op], order: &[usize], stuck: Option<usize>) -> String {
    let Some(first) = ops.iter().map(|op| op.start).min() else {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\"><text y=\"20\">{}: no operations</text></svg>",
            escape(title)
        );
    };
    let last = ops
        .iter()
        .map(|op| op.end)
        .max()
        .unwrap_or(first)
        .max(first + 1);
    let x = |t: u64| LEFT + (t - first) as f64 / (last - first) as f64 * (WIDTH - LEFT - 20.0);
    let lanes: BTreeMap<u32, usize> = ops
        .iter()
        .map(|op| op.client)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, i))
        .collect();
    let height = 60.0 + LANE * lanes.len() as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"monospace\" font-size=\"10\">\
         <text x=\"4\" y=\"16\" font-size=\"13\">{} ({} operations, {:.3} s; green: the longest consistent order found, numbered; red: what could not be placed after it)</text>",
        escape(title),
        ops.len(),
        (last - first) as f64 / 1e9
    );
    for (client, lane) in &lanes {
        let y = 50.0 + LANE * *lane as f64;
        let name = if *client == u32::MAX {
            "final".to_string()
        } else {
            format!("client {client}")
        };
        let _ = write!(out, "<text x=\"4\" y=\"{}\">{name}</text>", y + 14.0);
    }
    for op in ops {
        let y = 50.0 + LANE * lanes[&op.client] as f64;
        let (x0, x1) = (x(op.start), x(op.end).max(x(op.start) + 2.0));
        let position = order.iter().position(|&id| id == op.id);
        let fill = if Some(op.id) == stuck {
            "#e05050"
        } else if position.is_some() {
            "#70c070"
        } else {
            match op.outcome {
                Outcome::Ok => "#a0b8e0",
                Outcome::Fail => "#dddddd",
                Outcome::Unknown => "#f0d070",
            }
        };
        let _ = write!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"18\" fill=\"{fill}\" stroke=\"#555\"><title>{}</title></rect>",
            x1 - x0,
            escape(&describe(op))
        );
        if op.outcome == Outcome::Unknown {
            let _ = write!(
                out,
                "<line x1=\"{x1:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#b08000\" stroke-dasharray=\"4 3\"/>",
                y + 9.0,
                WIDTH - 20.0,
                y + 9.0
            );
        }
        let label = match position {
            Some(p) => format!("#{} {}", p + 1, short(op)),
            None => short(op),
        };
        // Labels alternate above and below their bars, so neighbours overlap less.
        let label_y = if op.id % 2 == 0 { y - 3.0 } else { y + 29.0 };
        // Labels near the right edge end at it instead of running off (about 6 px a
        // character at this size).
        let label_x = x0
            .min(WIDTH - 4.0 - 6.0 * label.chars().count() as f64)
            .max(0.0);
        let _ = write!(
            out,
            "<text x=\"{label_x:.1}\" y=\"{label_y:.1}\">{}</text>",
            escape(&label)
        );
    }
    out.push_str("</svg>");
    out
}

/// One line saying what an operation did, for tooltips and reports.
pub fn describe(op: &Op) -> String {
    format!(
        "#{} client {} on {} [{:.6} s .. {:.6} s] {:?}: {}{}",
        op.id,
        op.client,
        op.node,
        op.start as f64 / 1e9,
        op.end as f64 / 1e9,
        op.outcome,
        short(op),
        op.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

fn short(op: &Op) -> String {
    match (&op.call, &op.answer) {
        (Call::Read { .. }, Answer::Value { value }) => format!("r {}", show(*value)),
        (Call::Read { .. }, _) => "r ?".to_string(),
        (Call::Write { value, .. }, _) => format!("w {value}"),
        (Call::Cas { from, to, .. }, Answer::Swapped { swapped }) => {
            format!("cas {from}->{to} {}", if *swapped { "yes" } else { "no" })
        }
        (Call::Cas { from, to, .. }, _) => format!("cas {from}->{to} ?"),
        (Call::Append { element, .. }, _) => format!("append {element}"),
        (Call::List { .. }, Answer::List { elements }) => format!("list {elements:?}"),
        (Call::List { .. }, _) => "list ?".to_string(),
        (Call::Transfer { from, to, amount }, _) => format!("transfer {amount} {from}->{to}"),
        (Call::Balances { .. }, Answer::Balances { balances }) => format!("balances {balances:?}"),
        (Call::Balances { .. }, _) => "balances ?".to_string(),
        (Call::Hostile { sql }, _) => format!("hostile {sql}"),
        (Call::Stamp, _) => "stamp".to_string(),
        (Call::Stamps { .. }, _) => "stamps".to_string(),
    }
}

fn show(value: Option<i64>) -> String {
    value.map_or_else(|| "nil".to_string(), |v| v.to_string())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: usize, client: u32, call: Call, answer: Answer, start: u64, end: u64) -> Op {
        Op {
            id,
            client,
            node: "n".into(),
            call,
            answer,
            outcome: Outcome::Ok,
            start,
            end,
            error: None,
        }
    }

    #[test]
    fn the_stuck_operation_is_red_and_the_order_numbered() {
        let ops = [
            op(
                0,
                0,
                Call::Write { key: 0, value: 1 },
                Answer::Nothing,
                0,
                10,
            ),
            op(
                1,
                1,
                Call::Write { key: 0, value: 2 },
                Answer::Nothing,
                11,
                20,
            ),
            op(
                2,
                2,
                Call::Read {
                    key: 0,
                    level: "linearizable".into(),
                },
                Answer::Value { value: Some(1) },
                21,
                30,
            ),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        let svg = svg("register 0 <&>", &refs, &[0, 1], Some(2));
        assert!(svg.contains("register 0 &lt;&amp;&gt;"), "{svg}");
        assert!(svg.contains("#1 w 1") && svg.contains("#2 w 2"), "{svg}");
        assert_eq!(svg.matches("#e05050").count(), 1, "{svg}");
        assert!(svg.contains(">r 1<"), "{svg}");
    }
}
