//! `hearth serve`: the HTTP server (crates/hearth-server) on a multi-threaded runtime.

use clap::Args;
use hearth_server::ServeOptions;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    options: ServeOptions,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.options.resolve(&hearth_store::hearth_home())?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(hearth_server::serve(cfg))
}
