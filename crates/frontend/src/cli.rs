//! The front-end binaries' entry point: `NAME --config FILE` (or the front-end's environment
//! variable), shared by each binary and by `hyokctl`, which runs the same code as
//! `hyokctl xks serve` / `hyokctl dke serve`.

use crate::config::ConfigFile;
use anyhow::{Context, Result};
use clap::{Arg, ArgMatches, Command, FromArgMatches, value_parser};
use std::future::Future;
use std::marker::PhantomData;
use std::path::PathBuf;
use tokio::net::TcpListener;

/// What a front-end's binary is called and says about itself.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// The binary's name, e.g. `hyok-xks`; the readiness line is `NAME listening on ADDR`.
    pub name: &'static str,
    /// The environment variable that may give the configuration file instead of `--config`.
    pub config_env: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
}

impl Binary {
    /// `name`, `config_env`, `about`.
    pub const fn new(name: &'static str, config_env: &'static str, about: &'static str) -> Self {
        Binary { name, config_env, about }
    }
}

/// What a front-end waits for to stop: Ctrl-C or SIGTERM in the binaries, anything in tests.
pub trait Shutdown: Future<Output = ()> + Send + 'static {}

impl<T: Future<Output = ()> + Send + 'static> Shutdown for T {}

/// A front-end, named by its configuration file: its binary, and how it serves.
pub trait Frontend: ConfigFile {
    /// The binary.
    const BINARY: Binary;

    /// Checks the configuration and serves on `listener` until `shutdown` completes.
    fn run(self, listener: TcpListener, shutdown: impl Shutdown) -> impl Future<Output = Result<()>> + Send;
}

/// `--config FILE` of front-end `F`.
pub struct Args<F> {
    /// The TOML configuration file.
    pub config: PathBuf,
    frontend: PhantomData<fn() -> F>,
}

impl<F> std::fmt::Debug for Args<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args").field("config", &self.config).finish()
    }
}

impl<F> Clone for Args<F> {
    fn clone(&self) -> Self {
        Args { config: self.config.clone(), frontend: PhantomData }
    }
}

impl<F> Args<F> {
    /// `--config path`.
    pub fn new(config: PathBuf) -> Self {
        Args { config, frontend: PhantomData }
    }
}

const CONFIG: &str = "config";

impl<F: Frontend> FromArgMatches for Args<F> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let config = matches
            .get_one::<PathBuf>(CONFIG)
            .cloned()
            .ok_or_else(|| clap::Error::raw(clap::error::ErrorKind::MissingRequiredArgument, "--config is required"))?;
        Ok(Args::new(config))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(config) = matches.get_one::<PathBuf>(CONFIG) {
            self.config = config.clone();
        }
        Ok(())
    }
}

impl<F: Frontend> clap::Args for Args<F> {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(
            Arg::new(CONFIG)
                .long(CONFIG)
                .value_name("CONFIG")
                .env(F::BINARY.config_env)
                .required(true)
                .value_parser(value_parser!(PathBuf))
                .help("The TOML configuration file"),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// Loads the configuration, binds (the metrics listener too), prints `NAME listening on ADDR` and serves until Ctrl-C or
/// SIGTERM.
///
/// # Errors
/// If the configuration is invalid, the address cannot be bound or serving fails.
pub async fn execute<F: Frontend>(args: Args<F>) -> Result<()> {
    let mut config = F::load(&args.config)?;
    let (listen, _, _) = config.frontend();
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    hyok_proto::metrics::start(F::BINARY.name, config.metrics_listen()).await?;
    println!("{} listening on {}", F::BINARY.name, listener.local_addr()?);
    config.run(listener, hyok_proto::shutdown_signal()).await
}

/// The whole `main` of front-end `F`'s binary: logging, the command line, a Tokio runtime,
/// [`execute`].
///
/// # Errors
/// As [`execute`]; a bad command line prints its usage and exits.
pub fn main<F: Frontend>() -> Result<()> {
    hyok_proto::init_logging("info");
    let command = <Args<F> as clap::Args>::augment_args(
        Command::new(F::BINARY.name).version(env!("CARGO_PKG_VERSION")).about(F::BINARY.about),
    );
    let args = Args::<F>::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(execute(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Coordinator, HttpsTls};
    use std::net::SocketAddr;
    use std::path::Path;

    #[derive(Debug, serde::Deserialize)]
    struct Idle {
        listen: SocketAddr,
        tls: HttpsTls,
        coordinator: Coordinator,
    }

    impl ConfigFile for Idle {
        fn frontend(&mut self) -> (SocketAddr, &mut HttpsTls, &mut Coordinator) {
            (self.listen, &mut self.tls, &mut self.coordinator)
        }
        fn resolve_paths(&mut self, _: &Path) {}
        fn metrics_listen(&self) -> hyok_proto::metrics::Listen {
            hyok_proto::metrics::Listen::Off
        }
        fn validate(&self) -> Result<()> {
            Ok(())
        }
    }

    impl Frontend for Idle {
        const BINARY: Binary = Binary::new("hyok-idle", "HYOK_IDLE_TEST_CONFIG", "does nothing");
        async fn run(self, _: TcpListener, shutdown: impl Shutdown) -> Result<()> {
            shutdown.await;
            Ok(())
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Outer {
        #[command(flatten)]
        args: Args<Idle>,
    }

    #[test]
    fn config_comes_from_the_flag() {
        use clap::Parser;
        let outer = Outer::try_parse_from(["x", "--config", "/etc/idle.toml"]).unwrap();
        assert_eq!(outer.args.config, PathBuf::from("/etc/idle.toml"));
        let err = Outer::try_parse_from(["x"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let help = <Outer as clap::CommandFactory>::command().render_help().to_string();
        assert!(help.contains("HYOK_IDLE_TEST_CONFIG"), "{help}");
    }

    #[tokio::test]
    async fn a_missing_config_file_is_reported_with_its_path() {
        let err = execute(Args::<Idle>::new("/nonexistent/idle.toml".into())).await.unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/idle.toml"), "{err:#}");
    }
}
