//! Writes the engine benchmark's hand-written Rust baseline (one if-chain per
//! intent for each rule count of `benches/workload`) into `OUT_DIR`, where
//! `benches/engine.rs` includes it. Nothing else is generated; it reruns only
//! when the workload changes.

#[allow(dead_code)]
#[path = "benches/workload/mod.rs"]
mod workload;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=benches/workload/mod.rs");
    let Some(out) = std::env::var_os("OUT_DIR") else {
        println!("cargo:warning=OUT_DIR is not set; the engine baseline is not written");
        return;
    };
    let mut source: String = workload::SIZES
        .iter()
        .map(|&n| workload::baseline_source(n))
        .collect();
    source.push_str(
        "/// The baseline for `count` rules, when one was generated.\n\
         pub fn baseline_for(count: usize) -> Option<fn(&Typed) -> Option<u32>> {\n    match count {\n",
    );
    for n in workload::SIZES {
        source.push_str(&format!("        {n} => Some(baseline_{n}),\n"));
    }
    source.push_str("        _ => None,\n    }\n}\n");
    let path = std::path::Path::new(&out).join("engine_baseline.rs");
    if let Err(e) = std::fs::write(&path, source) {
        println!("cargo:warning=cannot write {}: {e}", path.display());
    }
}
