//! The memory floor of a thread-per-client design: a process whose only
//! work is N threads, each with the client threads' stack size, blocked in
//! poll(2) on an eventfd of its own. Run in its own cgroup, the difference
//! between N threads and none is what one bare blocked thread costs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crate::broker::Proc;

/// `--floor N STACK`: the helper process itself.
pub fn child(args: &[String]) -> ExitCode {
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(0);
    let stack: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64 << 10);
    for i in 0..n {
        let spawned = std::thread::Builder::new()
            .name(format!("floor-{i}"))
            .stack_size(stack)
            .spawn(|| {
                // SAFETY: a fresh eventfd and a poll on one local pollfd.
                unsafe {
                    let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    loop {
                        libc::poll(&mut p, 1, -1);
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("floor: cannot start thread {i}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("ready");
    let _ = io::stdout().flush();
    // Stay until the parent closes stdin (or kills us).
    let mut sink = [0u8; 1];
    let _ = io::stdin().read(&mut sink);
    ExitCode::SUCCESS
}

/// What N bare threads cost in their own cgroup.
#[derive(Debug, Default, Clone, Copy)]
pub struct Floor {
    pub usage: u64,
    pub kmem: u64,
    pub rss: u64,
}

/// Starts the helper with `n` threads and measures it once they are blocked.
pub fn measure(n: usize, stack: usize) -> io::Result<Floor> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--floor")
        .arg(n.to_string())
        .arg(stack.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut p = Proc::spawn(cmd, "floor")?;
    let out = p
        .child()
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(io::Error::other("floor helper did not start"));
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(Floor {
        usage: p.usage().unwrap_or(0),
        kmem: p.kmem().unwrap_or(0),
        rss: p.status("VmRSS"),
    })
}
