//! `coldstart-agent gpu-check`: one GPU report for operators and the GPU smoke test. With
//! `-o json` (or `-o yaml`) stdout holds exactly one document (the `GpuReport`, camelCase),
//! whatever the verdict.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use coldstart_agent::gpu::{
    self, DEFAULT_XID_IGNORE, Error, GpuReport, GpusExpected, Monitor, Settings,
};

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    /// A table for people.
    Text,
    /// One JSON document.
    Json,
    /// One YAML document (the JSON document's shape).
    Yaml,
}

/// Flags of `gpu-check` (the GPU flags of `run`, plus the output).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// GPUs this node must have: `auto` (at least one if NVML loads), `none`, or a count.
    #[arg(
        long,
        env = "COLDSTART_GPUS_EXPECTED",
        default_value = "auto",
        value_name = "auto|none|N"
    )]
    gpus_expected: GpusExpected,
    /// NVML library to load [default: libnvidia-ml.so.1].
    #[arg(long, env = "COLDSTART_NVML_LIBRARY", value_name = "PATH")]
    nvml_library: Option<PathBuf>,
    /// XIDs that do not make a GPU unhealthy, comma-separated [default: 13,31,43,45,68,109].
    #[arg(long, env = "COLDSTART_XID_IGNORE", value_name = "LIST")]
    xid_ignore: Option<String>,
    /// The node should be idle: processes holding GPU memory make it unhealthy.
    #[arg(long)]
    idle: bool,
    /// How long to listen for XID events before reporting.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    xid_wait: f64,
}

/// Runs the check; the exit code is the verdict.
pub fn main(args: Args) -> ExitCode {
    let xid_ignore = match &args.xid_ignore {
        Some(list) => match gpu::parse_xid_list(list) {
            Ok(set) => set,
            Err(e) => {
                eprintln!("error: invalid xid-ignore: {e}");
                return ExitCode::from(64);
            }
        },
        None => DEFAULT_XID_IGNORE.into_iter().collect(),
    };
    let Ok(wait) = Duration::try_from_secs_f64(args.xid_wait) else {
        eprintln!(
            "error: invalid xid-wait: {} is not a duration",
            args.xid_wait
        );
        return ExitCode::from(64);
    };
    let settings = Settings {
        gpus_expected: args.gpus_expected,
        xid_ignore,
        ..Settings::default()
    };
    let report = check(args.nvml_library.as_deref(), settings, wait, args.idle);
    let printed = match args.output {
        Output::Json => serde_json::to_string_pretty(&report)
            .map(|doc| println!("{doc}"))
            .map_err(|e| e.to_string()),
        Output::Yaml => serde_yaml::to_string(&report)
            .map(|doc| print!("{doc}"))
            .map_err(|e| e.to_string()),
        Output::Text => {
            print_text(&report);
            Ok(())
        }
    };
    if let Err(e) = printed {
        eprintln!("error: cannot encode the report: {e}");
        return ExitCode::from(1);
    }
    ExitCode::from(if report.healthy { 0 } else { 1 })
}

fn check(
    library: Option<&std::path::Path>,
    settings: Settings,
    wait: Duration,
    idle: bool,
) -> GpuReport {
    let gpu = gpu::open(library);
    match Monitor::start(gpu, settings.clone()) {
        Ok(monitor) => {
            std::thread::sleep(wait);
            monitor.snapshot(None, idle)
        }
        Err(e) => failed(
            Error::EventsUnsupported(format!("cannot start the xid thread: {e}")),
            &settings,
            idle,
        ),
    }
}

fn failed(e: Error, settings: &Settings, idle: bool) -> GpuReport {
    let expected = gpu::Expected::resolve(settings.gpus_expected, None);
    gpu::report(&Err(e), &Default::default(), expected, idle, settings)
}

fn print_text(r: &GpuReport) {
    let verdict = if r.healthy { "healthy" } else { "UNHEALTHY" };
    println!("GPUs {verdict}: {} ({})", r.reason, r.message);
    if let Some(v) = &r.driver_version {
        let cuda = r.cuda_version.as_deref().unwrap_or("?");
        println!("driver {v}, CUDA {cuda}, {} expected", r.expected);
    }
    for d in &r.devices {
        let i = &d.info;
        let state = d.reason.unwrap_or("ok");
        let temp = i
            .temperature_celsius
            .map_or("?".into(), |t| format!("{t} C"));
        println!(
            "  {} {} {} {} MiB, {temp}, {}: {state}",
            i.index,
            i.uuid,
            i.name,
            i.memory_total_bytes >> 20,
            i.pci_bus_id.as_deref().unwrap_or("?"),
        );
    }
    if let Some(e) = &r.xid_watch_error {
        println!("xid events not watched: {e}");
    }
}
