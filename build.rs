//! Embeds the default router model (`models/router`) in the binary when it is there, so
//! `switchyard serve`, `demo` and `classify` work from any directory with no files beside them.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(switchyard_embedded_model)");
    for f in ["config.json", "vocab.txt", "model.safetensors"] {
        println!("cargo::rerun-if-changed=models/router/{f}");
    }
    let dir = std::path::Path::new("models/router");
    if ["config.json", "vocab.txt", "model.safetensors"]
        .iter()
        .all(|f| dir.join(f).exists())
    {
        println!("cargo::rustc-cfg=switchyard_embedded_model");
    }
}
