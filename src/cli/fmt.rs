//! `handoff fmt [--check] [PATHS]`: rewrites rules files in the one canonical
//! layout, keeping comments.

use super::{exit, fail};
use crate::dsl::diagnostic::{render, Sources};
use crate::dsl::format::format_playbook;
use crate::dsl::parse::parse_playbook;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct FmtArgs {
    /// Files or directories (every `.rules` file inside) [default: rules].
    paths: Vec<PathBuf>,
    /// Change nothing; list the files that would change and exit 1 if any would.
    #[arg(long)]
    check: bool,
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        out.extend(
            entries
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "rules") && p.is_file()),
        );
        Ok(())
    } else if path.exists() {
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file or directory",
        ))
    }
}

/// Formats rules text; `Err` holds the rendered syntax errors.
pub fn format_text(text: &str, file: &str) -> Result<String, String> {
    let parsed = parse_playbook(text, file);
    let syntax: Vec<_> = parsed.diagnostics.iter().filter(|d| d.is_error()).collect();
    match parsed.playbook {
        Some(playbook) if syntax.is_empty() => Ok(format_playbook(&playbook, text)),
        _ => {
            let mut sources = Sources::default();
            sources.add(file, text);
            Err(syntax
                .iter()
                .map(|d| render(d, &sources))
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }
}

pub fn run(args: FmtArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("rules")]
    } else {
        args.paths
    };
    let mut files = Vec::new();
    for path in &paths {
        if let Err(e) = collect(path, &mut files) {
            return fail(format!("cannot read `{}`: {e}", path.display()));
        }
    }
    let mut changed = Vec::new();
    let mut broken = false;
    for file in &files {
        let shown = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => return fail(format!("cannot read `{shown}`: {e}")),
        };
        match format_text(&text, &shown) {
            Ok(formatted) if formatted != text => {
                if !args.check {
                    if let Err(e) = std::fs::write(file, &formatted) {
                        return fail(format!("cannot write `{shown}`: {e}"));
                    }
                }
                changed.push(shown);
            }
            Ok(_) => {}
            Err(rendered) => {
                eprint!("{rendered}");
                eprintln!("{shown}: not formatted, fix the syntax first");
                broken = true;
            }
        }
    }
    for file in &changed {
        if args.check {
            println!("would reformat {file}");
        } else {
            println!("formatted {file}");
        }
    }
    if broken {
        return exit::usage();
    }
    if args.check && !changed.is_empty() {
        exit::failed()
    } else {
        if !args.check || changed.is_empty() {
            let left = files.len() - changed.len();
            if left > 0 {
                println!(
                    "{left} file{} already formatted",
                    if left == 1 { "" } else { "s" }
                );
            }
        }
        exit::ok()
    }
}
