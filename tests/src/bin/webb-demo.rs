//! `webb-demo`: brings up the demo lab (two nodes, pods, cluster DNS, a
//! world address, a NetworkPolicy, real traffic, one agent per node and a
//! relay), opens `webb ui` on the relay, and tears everything down when the
//! dashboard quits. `scripts/demo.sh` installs and builds, then runs this.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use webb_tests::{agent::binary, demo};

/// The webb demo: a live two-node lab cluster, watched by webb.
#[derive(Parser, Debug)]
#[command(name = "webb-demo", version)]
struct Args {
    /// Do not open the dashboard: bring the lab up, print commands to try,
    /// and wait for Ctrl-C (or --seconds) before tearing it down.
    #[arg(long)]
    no_ui: bool,
    /// Leave the lab running on exit and print the commands to try it
    /// (`--down` removes it later).
    #[arg(long)]
    keep: bool,
    /// Tear down a lab left running by --keep (or by a killed demo).
    #[arg(long, conflicts_with_all = ["no_ui", "keep", "seconds"])]
    down: bool,
    /// Where the relay listens; the dashboard and `webb observe` connect
    /// here.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4245")]
    listen: String,
    /// With --no-ui: tear the lab down after this many seconds.
    #[arg(long, requires = "no_ui", conflicts_with = "keep")]
    seconds: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs one traffic generator inside a lab pod (started by the demo).
    #[command(hide = true)]
    Traffic { role: String },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Traffic { role }) = &args.command {
        return match demo::traffic(role) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "demo: needs root: it creates network namespaces and loads eBPF programs. \
             Run it with sudo: `sudo bash scripts/demo.sh`"
        );
        return ExitCode::from(1);
    }
    if args.down {
        if !demo::is_up() {
            eprintln!("demo: no demo lab is up; checking for leftovers anyway");
        }
        eprintln!("demo: torn down: {}", demo::down());
        return ExitCode::SUCCESS;
    }
    if let Some(reason) = webb_tests::lab::privileged_skip_reason() {
        eprintln!("demo: cannot build the lab here: {reason}");
        return ExitCode::from(1);
    }
    if let Err(e) = std::net::TcpListener::bind(&args.listen) {
        eprintln!(
            "demo: cannot listen on {} for the relay ({e}); is another relay or demo running? \
             Pick another address with --listen",
            args.listen
        );
        return ExitCode::from(1);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e.into()),
    };
    match rt.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("demo: {e:#}");
    ExitCode::from(1)
}

async fn run(args: &Args) -> anyhow::Result<()> {
    // Registered before the lab is built: from here on a Ctrl-C or SIGTERM
    // leads to a tear-down instead of killing the demo half-way.
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;

    let listen = args.listen.clone();
    let mut building = tokio::task::spawn_blocking(move || demo::up(&listen));
    let demo = tokio::select! {
        built = &mut building => built??,
        _ = int.recv() => interrupted(building).await?,
        _ = term.recv() => interrupted(building).await?,
    };
    eprintln!(
        "demo: up. Nodes demo-node-1 and demo-node-2 run shop/frontend, shop/cart, shop/payments, \
         shop/db and kube-system/coredns;\n      policy db-allow-cart lets only cart reach db, so \
         frontend -> db is DROPPED."
    );

    if args.no_ui {
        if args.keep {
            kept(demo);
            return Ok(());
        }
        println!("demo: relay on {}. Try, in another terminal:", demo.relay);
        print!("{}", demo::try_these(&demo.relay));
        println!("demo: running; Ctrl-C tears the lab down.");
        let seconds = async {
            match args.seconds {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = seconds => {}
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    } else {
        let mut ui = tokio::process::Command::new(binary("webb"))
            .args(["ui", "--server", &demo.relay])
            .spawn()?;
        let stop = tokio::select! {
            status = ui.wait() => {
                if let Ok(s) = status && !s.success() {
                    eprintln!("demo: webb ui exited with {s}");
                }
                false
            }
            _ = int.recv() => true,
            _ = term.recv() => true,
            _ = hup.recv() => true,
        };
        if stop && let Some(pid) = ui.id() {
            // SIGTERM lets the dashboard restore the terminal.
            // SAFETY: kill with our child's pid and a valid signal.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let _ = tokio::time::timeout(Duration::from_secs(5), ui.wait()).await;
        }
        if args.keep {
            kept(demo);
            return Ok(());
        }
    }
    eprintln!("demo: tearing down");
    let report = tokio::task::spawn_blocking(move || demo.down()).await?;
    eprintln!("demo: torn down: {report}");
    Ok(())
}

/// Leaves the lab running and says how to use it and remove it.
fn kept(demo: demo::Demo) {
    println!("demo: the lab keeps running, relay on {}. Try:", demo.relay);
    print!("{}", demo::try_these(&demo.relay));
    println!("demo: `sudo bash scripts/demo.sh --down` removes it.");
    demo.keep();
}

/// A signal arrived while the lab was being built: let the build finish
/// (it cannot stop half-way cleanly), tear it down, and say so.
async fn interrupted(
    building: tokio::task::JoinHandle<anyhow::Result<demo::Demo>>,
) -> anyhow::Result<demo::Demo> {
    eprintln!("demo: interrupted; tearing down once the lab is built");
    if let Ok(Ok(d)) = building.await {
        let report = tokio::task::spawn_blocking(move || d.down()).await?;
        eprintln!("demo: torn down: {report}");
    }
    anyhow::bail!("interrupted")
}
