//! Writes the man page and the shell completions, generated from the clap definitions, into a
//! folder for the Debian package (`scripts/package`).
//! usage: gen_assets OUT_DIR

use clap::CommandFactory;
use clap_complete::Shell;
use jumio_batchd::cli::Cli;
use std::io::Write;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: gen_assets OUT_DIR"))?;
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    let mut command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(out.join("jumio-batchd.1.gz"))?, flate2::Compression::best());
    gz.write_all(&page)?;
    gz.finish()?;
    for (shell, file) in [(Shell::Bash, "jumio-batchd.bash"), (Shell::Zsh, "_jumio-batchd"), (Shell::Fish, "jumio-batchd.fish")] {
        let mut f = std::fs::File::create(out.join(file))?;
        clap_complete::generate(shell, &mut command, "jumio-batchd", &mut f);
    }
    Ok(())
}
