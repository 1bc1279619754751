//! No input panics: truncated, garbled and hostile text gets diagnostics.

mod common;

use common::fixture_text;
use sqlraft_inventory::{InstallPlan, Mode, check};

const FIXTURES: &[&str] = &[
    "good_single_core.yml",
    "good_distributed.yml",
    "good_other_block.yml",
    "good_precedence.yml",
    "good_expand.yml",
    "bad_shapes.yml",
    "bad_many.yml",
];

/// Runs everything a caller would on `text`; only panics would fail the test.
fn exercise(text: &str) -> bool {
    let checked = check("fuzz.yml", text);
    let _ = checked.diagnostics.to_string();
    for g in &checked.inventory.groups {
        let _ = checked.inventory.effective_vars(&g.name);
    }
    match checked.valid() {
        Ok(inv) => {
            let _ = InstallPlan::new(&inv, Mode::Distributed).to_string();
            let _ = InstallPlan::new(&inv, Mode::Expand).to_string();
            true
        }
        Err(_) => {
            assert!(
                checked.diagnostics.has_errors(),
                "invalid without an error:\n{text}"
            );
            false
        }
    }
}

#[test]
fn truncated_fixtures_never_panic() {
    for name in FIXTURES {
        let text = fixture_text(name);
        for cut in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
            exercise(&text[..cut]);
        }
    }
}

#[test]
fn garbled_fixtures_get_errors_not_panics() {
    const JUNK: &[&str] = &[
        "\t", ":", "- ", "[", "{", "\"", "'", "&a ", "*a", "!!map ", "? ", "|", "%", "\u{0}", "#",
        "\n  ", "ядро",
    ];
    // Deterministic pseudo-random positions: a small LCG keeps the test reproducible.
    let mut seed: u64 = 0x5eed;
    let mut next = |bound: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        usize::try_from(seed >> 33).unwrap_or(0) % bound.max(1)
    };
    let mut rejected = 0;
    let mut runs = 0;
    for name in FIXTURES {
        let text = fixture_text(name);
        for _ in 0..300 {
            let mut garbled = text.clone();
            for _ in 0..3 {
                let mut at = next(garbled.len() + 1);
                while !garbled.is_char_boundary(at) {
                    at -= 1;
                }
                garbled.insert_str(at, JUNK[next(JUNK.len())]);
            }
            runs += 1;
            if !exercise(&garbled) {
                rejected += 1;
            }
        }
    }
    assert!(
        rejected * 2 > runs,
        "most garbled inventories are rejected ({rejected}/{runs})"
    );
}

#[test]
fn hostile_inputs_are_bounded() {
    let deep = "[".repeat(10_000);
    assert!(check("deep.yml", &deep).diagnostics.has_errors());
    let deep_map = (0..200)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect::<String>();
    assert!(check("deep_map.yml", &deep_map).diagnostics.has_errors());
    // An alias bomb expands past the node limit and is refused, not expanded.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let prev = format!("*a{}", i - 1);
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    let checked = check("bomb.yml", &bomb);
    assert!(
        checked
            .diagnostics
            .all()
            .iter()
            .any(|d| d.message.contains("too large")),
        "{}",
        checked.diagnostics
    );
    let huge = "#".repeat(sqlraft_inventory::MAX_INVENTORY_BYTES + 1);
    assert!(check("huge.yml", &huge).diagnostics.has_errors());
    for text in [
        "---\n...\n---\n",
        "all: !!binary aGVsbG8=\n",
        "? [a, b]\n: c\n",
        "all:\n  children:\n    kuma_core:\n      hosts:\n        ? {a: b}\n",
        "\u{feff}all:\n",
        "all: &x\n  children: *x\n",
    ] {
        exercise(text);
    }
}
