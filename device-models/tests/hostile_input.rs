//! Random, truncated and mutated input never panics the loader or the validator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::path::Path;

use device_models::load::{LoadedObjects, load_str};
use device_models::validate::validate;
use proptest::prelude::*;

const SAMPLE: &str = include_str!("../examples/oil-platform/wellhead.yaml");
const MODELS: &str = include_str!("../examples/oil-platform/models.yaml");

fn run(text: &str) {
    let mut out = LoadedObjects::default();
    load_str(Path::new("models.yaml"), MODELS, &mut out);
    load_str(Path::new("fuzz.yaml"), text, &mut out);
    let set = validate(out);
    // Whatever happened, printing it works.
    for d in &set.diagnostics {
        let _ = d.to_string();
    }
    let _ = set.summary();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn truncated_files(cut in 0usize..SAMPLE.len()) {
        let mut end = cut;
        while !SAMPLE.is_char_boundary(end) { end -= 1; }
        run(&SAMPLE[..end]);
    }

    #[test]
    fn mutated_files(pos in 0usize..SAMPLE.len(), bytes in proptest::collection::vec(any::<u8>(), 1..8)) {
        let mut b = SAMPLE.as_bytes().to_vec();
        for (i, x) in bytes.iter().enumerate() {
            if let Some(slot) = b.get_mut(pos + i) { *slot = *x; }
        }
        run(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn spliced_lines(a in 0usize..80, b in 0usize..80) {
        let lines: Vec<&str> = SAMPLE.lines().collect();
        let mut v = lines.clone();
        let (a, b) = (a % lines.len(), b % lines.len());
        v.swap(a, b);
        v.remove(a);
        run(&v.join("\n"));
    }

    #[test]
    fn random_text(s in "\\PC{0,300}") {
        run(&s);
    }
}

#[test]
fn alias_bomb_is_refused_not_expanded() {
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    let mut out = LoadedObjects::default();
    load_str(Path::new("bomb.yaml"), bomb, &mut out);
    assert_eq!(out.diagnostics.len(), 1, "{:?}", out.diagnostics);
    assert!(out.diagnostics[0].is_error());
}

#[test]
fn deeply_nested_input_is_an_error() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut out = LoadedObjects::default();
    load_str(Path::new("deep.yaml"), &deep, &mut out);
    assert!(out.diagnostics.iter().any(|d| d.is_error()));
}

#[test]
fn a_large_site_file_loads() {
    // 1,500 devices in one file: more documents and nodes than the YAML parser's defaults allow.
    let mut text = String::from(MODELS);
    for i in 0..1500 {
        text.push_str(&format!(
            "---\napiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: gd-{i}, namespace: rig7}}\nspec:\n  deviceModelRef: {{name: gas-detector}}\n  protocol: {{protocolName: mqtt, configData: {{topic: t/{i}}}}}\n  properties:\n    - {{name: h2s, visitors: {{configData: {{pointer: /h2s}}}}}}\n    - {{name: lel, visitors: {{configData: {{pointer: /lel}}}}}}\n    - {{name: alarm, visitors: {{configData: {{pointer: /alarm}}}}}}\n"
        ));
    }
    let mut out = LoadedObjects::default();
    load_str(Path::new("site.yaml"), &text, &mut out);
    let set = validate(out);
    assert_eq!(set.errors(), 0, "{:?}", set.diagnostics.first());
    assert_eq!(set.devices.len(), 1500);
}
