//! `faultline completions SHELL` and `faultline manpage`: shell completion scripts and a roff man
//! page generated from the same clap definition as `--help`, so they never drift from the flags.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// Shells `faultline completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The `completions --help` epilogue.
pub const COMPLETIONS_HELP: &str = "\
Install, for example:
  faultline completions bash > /etc/bash_completion.d/faultline
  faultline completions zsh  > \"${fpath[1]}/_faultline\"
  faultline completions fish > ~/.config/fish/completions/faultline.fish";

/// Writes the completion script for `args.shell` of the command `C` to stdout.
pub fn completions<C: CommandFactory>(args: &CompletionsArgs) -> ExitCode {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut cmd = C::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "faultline", &mut out);
    write_stdout(&out)
}

/// Writes the man page (roff, section 1) of the command `C` to stdout.
pub fn manpage<C: CommandFactory>() -> ExitCode {
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(C::command()).render(&mut out) {
        eprintln!("error: cannot render the man page: {e}");
        return ExitCode::from(2);
    }
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::from(2)
        }
    }
}
