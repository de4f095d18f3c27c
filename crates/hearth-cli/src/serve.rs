//! `hearth serve`: the HTTP server (crates/hearth-server) on a multi-threaded runtime.

use clap::Args;
use hearth_server::ServeOptions;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    options: ServeOptions,
    /// Log lines as text or as one JSON object each (filtered by RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "HEARTH_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let logs = tracing_subscriber::fmt().with_env_filter(crate::log_filter("info")).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let cfg = args.options.resolve(&hearth_store::hearth_home())?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(hearth_server::serve(cfg))
}
