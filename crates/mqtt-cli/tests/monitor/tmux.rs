//! A program running in a detached tmux session of its own, driven with `send-keys` and read
//! with `capture-pane`.
//!
//! The program runs under `sh`, which prints its exit status and the terminal modes (`stty -a`)
//! once it ends, then waits: a test reads whether the program exited well and left the terminal
//! as it found it.

use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a condition on the screen may take to hold (generous: a loaded 2-core machine).
const DEADLINE: Duration = Duration::from_secs(30);

/// How often the screen is read while waiting.
const POLL: Duration = Duration::from_millis(50);

/// A tmux server with one 80x24 pane running a program; the server is killed on drop.
pub(crate) struct Tmux {
    /// Holds the server's socket and configuration.
    dir: TempDir,
}

impl Tmux {
    /// Whether tmux can be used. When it is missing: `false` after a note, or a panic when the
    /// `CI` environment variable is set (CI installs tmux; a missing one is a failure there).
    pub(crate) fn available() -> bool {
        let found = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|output| output.status.success());
        if !found {
            if std::env::var_os("CI").is_some() {
                panic!("tmux is not installed, and CI is set: install it (`apt-get install tmux`)");
            }
            eprintln!("note: tmux is not installed; skipping this terminal test");
        }
        found
    }

    /// Starts `program` with `args` in an 80x24 pane.
    pub(crate) fn start(program: &Path, args: &[&str]) -> Tmux {
        let dir = tempfile::Builder::new()
            .prefix("mqtt-monitor-tmux-")
            .tempdir()
            .expect("temporary directory");
        // No status line: the pane gets all 24 rows. The wrapper below is `sh` syntax, whatever
        // the user's shell.
        let config = "set -g status off\nset -g default-shell /bin/sh\n";
        std::fs::write(dir.path().join("tmux.conf"), config).expect("tmux.conf");
        let mut line = quote(&program.display().to_string());
        for arg in args {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        line.push_str("; echo \"exit status $?\"; stty -a; exec sleep 600");
        let tmux = Tmux { dir };
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-s",
            "t",
            &line,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        let socket = self.dir.path().join("socket");
        let config = self.dir.path().join("tmux.conf");
        let output = Command::new("tmux")
            // Tests run inside a tmux session start a server of their own all the same.
            .env_remove("TMUX")
            .arg("-S")
            .arg(socket)
            .arg("-f")
            .arg(config)
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The pane's text, one line per row.
    pub(crate) fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// A tmux format about the pane, e.g. `#{alternate_on}`.
    pub(crate) fn display(&self, format: &str) -> String {
        let output = self.run(&["display-message", "-p", "-t", "t", format]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Types keys (tmux names: `p`, `C-c`, `Tab`, `PageDown`).
    pub(crate) fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// The process id of the program (the child of the pane's shell), from `/proc`.
    #[cfg(target_os = "linux")]
    pub(crate) fn program_pid(&self) -> u32 {
        let shell = self.display("#{pane_pid}");
        let entries = std::fs::read_dir("/proc").expect("/proc");
        entries
            .filter_map(|entry| {
                let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
                let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
                (ppid == shell).then_some(pid)
            })
            .next()
            .unwrap_or_else(|| panic!("no child of the pane's shell {shell}"))
    }

    /// Resizes the window (and so the pane) to `width` x `height`.
    pub(crate) fn resize(&self, width: u16, height: u16) {
        let (width, height) = (width.to_string(), height.to_string());
        self.run(&["resize-window", "-t", "t", "-x", &width, "-y", &height]);
    }

    /// Waits until the screen satisfies `condition` and returns it; panics with `what` and the
    /// last screen after the deadline.
    pub(crate) fn wait_for(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {DEADLINE:?} waiting for {what}; the screen:\n{screen}"
            );
            thread::sleep(POLL);
        }
    }

    /// Waits until the screen contains every one of `texts`.
    pub(crate) fn wait_for_all(&self, texts: &[&str]) -> String {
        self.wait_for(&format!("{texts:?}"), |screen| {
            texts.iter().all(|text| screen.contains(text))
        })
    }

    /// The bottom line (the monitor's menu).
    pub(crate) fn menu(&self) -> String {
        self.screen().lines().nth(23).unwrap_or_default().to_owned()
    }

    /// Waits for the program to end and returns its exit status, after checking that it left
    /// the terminal as it found it: not on the alternate screen, the cursor shown, line
    /// editing and echo back on (raw mode off).
    pub(crate) fn wait_for_exit(&self) -> i32 {
        let screen = self.wait_for("the program to exit", |screen| {
            screen.contains("exit status") && screen.contains("icanon")
        });
        assert_eq!(
            self.display("#{alternate_on}"),
            "0",
            "still on the alternate screen:\n{screen}"
        );
        assert_eq!(
            self.display("#{cursor_flag}"),
            "1",
            "the cursor is hidden:\n{screen}"
        );
        let modes: Vec<&str> = screen.split_whitespace().collect();
        for mode in ["icanon", "echo", "isig"] {
            assert!(
                modes.contains(&mode),
                "terminal mode {mode} not restored:\n{screen}"
            );
        }
        let status = screen
            .lines()
            .find_map(|line| line.trim().strip_prefix("exit status "))
            .and_then(|status| status.trim().parse().ok());
        status.unwrap_or_else(|| panic!("no exit status on the screen:\n{screen}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let socket = self.dir.path().join("socket");
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(socket)
            .arg("kill-server")
            .output();
    }
}

/// `text` in single quotes for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
