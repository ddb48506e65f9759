//! Guard: no code outside tests may draw floating-point randomness.
//!
//! Floating-point noise (e.g. `rand_distr::Normal`) leaks through its rounding
//! pattern (Mironov 2012) and breaks exact accounting; every random decision in
//! feedloop must go through `feedloop_privacy::sampler`'s integer samplers.
//! This test scans the non-test Rust sources of the privacy crate and, when
//! present, `core/src`, `src` and `server/src`, for the patterns in
//! [`FORBIDDEN`]. Comments are ignored, and so is every item annotated
//! `#[cfg(test)]` (the attribute and the braces of the item that follows).

use std::path::{Path, PathBuf};

/// What counts as drawing floating-point randomness.
const FORBIDDEN: &[&str] = &[
    "rand_distr",      // any continuous distribution crate
    "Normal::",        // rand_distr::Normal / statrs Normal
    "Normal<",         //
    "StandardNormal",  //
    "LogNormal",       //
    "Exp1",            // exponential
    "Open01",          // float in (0, 1)
    "OpenClosed01",    //
    "StandardUniform", // rand 0.9+: `random::<f64>()` via StandardUniform
    "Uniform<f64>",    //
    "Uniform<f32>",    //
    "gen::<f64>",      // rand ≤ 0.8
    "gen::<f32>",      //
    "random::<f64>",   // rand ≥ 0.9
    "random::<f32>",   //
    "gen_range(0.0",   // float ranges
    "random_range(0.0",
    "gen_bool(",       // Bernoulli with an f64 probability
    "random_bool(",    //
    "Bernoulli::new(", // rand's f64 Bernoulli
    "f64::ln(rng",     // hand-rolled inverse-CDF sampling
    "next_u64() as f64",
    "next_u32() as f64",
    "next_u64() as f32",
    "next_u32() as f32",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source with comments and `#[cfg(test)]` items blanked out (line numbers kept).
fn production_code(source: &str) -> Vec<String> {
    let mut lines: Vec<String> = source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => l[..i].to_string(),
            None => l.to_string(),
        })
        .collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].contains("#[cfg(test)]") {
            // Blank from the attribute to the end of the following item: its matching
            // closing brace, or a `;` reached before any brace opens.
            let mut depth = 0i32;
            let mut opened = false;
            let mut j = i;
            'item: while j < lines.len() {
                let text = if j == i {
                    lines[j]
                        .split("#[cfg(test)]")
                        .nth(1)
                        .unwrap_or("")
                        .to_string()
                } else {
                    lines[j].clone()
                };
                for c in text.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => {
                            depth -= 1;
                            if opened && depth == 0 {
                                break 'item;
                            }
                        }
                        ';' if !opened => break 'item,
                        _ => {}
                    }
                }
                j += 1;
            }
            let end = (j + 1).min(lines.len());
            for line in &mut lines[i..end] {
                line.clear();
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    lines
}

#[test]
fn no_floating_point_noise_outside_tests() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let roots = [
        crate_dir.join("src"),
        crate_dir.join("../core/src"),
        crate_dir.join("../src"),
        crate_dir.join("../server/src"),
        // Secure aggregation: the helper's noise comes from the exact sampler, like the device's.
        crate_dir.join("../secagg/src"),
        // The GPU path computes the learning gradient that gets privatized: no noise of its own.
        crate_dir.join("../gpu/src"),
    ];
    let mut files = Vec::new();
    for root in &roots {
        rust_files(root, &mut files);
    }
    assert!(
        files.iter().any(|f| f.ends_with("sampler.rs")),
        "the scan must at least cover privacy/src"
    );
    let mut findings = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        for (n, line) in production_code(&source).iter().enumerate() {
            for pattern in FORBIDDEN {
                if line.contains(pattern) {
                    findings.push(format!(
                        "{}:{}: `{pattern}` in `{}`",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    println!(
        "scanned {} files for {} patterns",
        files.len(),
        FORBIDDEN.len()
    );
    assert!(
        findings.is_empty(),
        "floating-point randomness outside tests:\n{}",
        findings.join("\n")
    );
}

#[test]
fn the_scanner_sees_through_nothing_but_tests_and_comments() {
    let code = "fn a() { let x = rng.random::<f64>(); }\n// rand_distr in a comment\n#[cfg(test)]\nmod tests {\n    fn b() { Normal::new(0.0, 1.0); }\n}\nfn c() { rng.gen_bool(0.5); }\n";
    let kept = production_code(code);
    let joined = kept.join("\n");
    assert!(
        joined.contains("random::<f64>") && joined.contains("gen_bool("),
        "{joined}"
    );
    assert!(
        !joined.contains("rand_distr") && !joined.contains("Normal::"),
        "{joined}"
    );
}
