//! Writes the GGUF seeds (tiny valid files) into the folder given, for `cargo afl fuzz -i`.

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "seeds/gguf".into()));
    std::fs::create_dir_all(&dir)?;
    for (i, seed) in papertune_models::fuzz_targets::gguf_seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}.gguf")), seed)?;
    }
    Ok(())
}
