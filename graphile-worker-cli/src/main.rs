//! The standalone `graphile-worker` command: tasks are the executables in
//! `--tasks DIR`.

fn main() -> std::process::ExitCode {
    graphile_worker_cli::main_with(graphile_worker_cli::Tasks::Executables)
}
