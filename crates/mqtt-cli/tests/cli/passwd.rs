//! `mqtt passwd` against mosquitto both ways (a file it writes is read by a real mosquitto; a
//! file `mosquitto_passwd` writes is read by `mqtt broker` and edited by `mqtt passwd`), and
//! its edits, prompts and one-line errors. Files are checked with `PasswordFile`, the code the
//! broker loads them with.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mqtt_tokio::broker::PasswordFile;

use super::support::{
    Mosquitto, OurBroker, Output, Server, TIMEOUT, find_program, mqtt, publish, run,
};

/// `mqtt passwd ARGS`, stdin a pipe (so not a terminal).
fn passwd(args: &[&str]) -> Output {
    run(
        mqtt(std::iter::once("passwd").chain(args.iter().copied())),
        b"",
    )
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn load(path: &Path) -> PasswordFile {
    PasswordFile::load(path).unwrap_or_else(|error| panic!("{error}"))
}

/// Whether `user` with `password` gets in: `Ok`, or the client's one-line error.
fn connect(server: &Server, user: &str, password: &str) -> Result<(), String> {
    let out = publish(
        server,
        &[
            "-u", user, "-P", password, "-t", "passwd/t", "-m", "x", "-q", "1",
        ],
        b"",
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(out.one_line_failure())
    }
}

fn assert_refused(server: &Server, user: &str, password: &str) {
    let error = connect(server, user, password).expect_err("a wrong password got in");
    // mosquitto 2.0 answers a wrong password with 0x87 (its CONNACK `(0, 135)` in the log),
    // ours with the more precise 0x86.
    let reason = match server {
        Server::Ours(_) => "Bad User Name or Password (0x86)",
        Server::Mosquitto(_) => "Not authorized (0x87)",
    };
    assert!(
        error.contains("connection refused") && error.contains(reason),
        "{user}: {error}"
    );
}

/// A file made by `mqtt passwd -c -b` and extended by `mqtt passwd -b` is read by mosquitto
/// 2.0: the right passwords get in, a wrong one and an unknown user do not.
#[test]
fn mosquitto_reads_a_file_written_by_mqtt_passwd() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    passwd(&["-c", "-b", text(&file), "alice", "secret"]).success();
    passwd(&["-b", text(&file), "bob", "p:w d"]).success();
    // As root mosquitto would read the file as user `mosquitto`, who may not enter the
    // temporary directory; `user root` keeps it root (and is ignored when not run as root).
    let config = format!(
        "allow_anonymous false\npassword_file {}\nuser root\npersistence false\n\
         log_dest stderr\nlog_type all\n",
        file.display()
    );
    let Some(broker) = Mosquitto::start_with(&config) else {
        return;
    };
    let server = Server::Mosquitto(broker);
    connect(&server, "alice", "secret").unwrap();
    connect(&server, "bob", "p:w d").unwrap();
    assert_refused(&server, "alice", "Secret");
    assert_refused(&server, "alice", "p:w d");
    assert_refused(&server, "carol", "secret");
}

/// A file made by `mosquitto_passwd -c -b` and extended by `mqtt passwd -b` is read by our
/// broker; mosquitto's line is kept as it was, and `mosquitto_passwd` can still edit the file.
#[test]
fn our_broker_reads_a_file_written_by_mosquitto_passwd() {
    let Some(mosquitto_passwd) = find_program("mosquitto_passwd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let status = Command::new(&mosquitto_passwd)
        .args(["-c", "-b"])
        .arg(&file)
        .args(["alice", "secret"])
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_passwd failed");
    let theirs = fs::read_to_string(&file).unwrap();
    assert!(theirs.starts_with("alice:$7$101$"), "{theirs}");
    passwd(&["-b", text(&file), "bob", "hunter2"]).success();
    let ours = fs::read_to_string(&file).unwrap();
    assert!(ours.starts_with(&theirs), "alice's line changed:\n{ours}");

    fs::write(
        dir.path().join("broker.toml"),
        "password_file = \"passwd\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let config = dir.path().join("broker.toml");
    let server = Server::Ours(OurBroker::start_args(&[
        "broker",
        "--config",
        text(&config),
    ]));
    connect(&server, "alice", "secret").unwrap();
    connect(&server, "bob", "hunter2").unwrap();
    assert_refused(&server, "alice", "hunter2");
    assert_refused(&server, "bob", "secret");
    assert_refused(&server, "carol", "secret");

    // mosquitto_passwd reads what we wrote: it deletes bob and keeps alice.
    let status = Command::new(&mosquitto_passwd)
        .arg("-D")
        .arg(&file)
        .arg("bob")
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_passwd -D failed");
    assert_eq!(fs::read_to_string(&file).unwrap(), theirs);
}

/// Changing one user's password: the old one is refused, the new one accepted, and every other
/// line (comments too) stays byte for byte where it was.
#[test]
fn changing_a_password_keeps_every_other_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    passwd(&["-c", "-b", text(&file), "alice", "a1"]).success();
    passwd(&["-b", text(&file), "bob", "b1"]).success();
    passwd(&["-b", text(&file), "carol", "c1"]).success();
    let before = fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = before.lines().map(str::to_owned).collect();
    lines.insert(1, "# the admins".to_owned());
    lines.insert(2, String::new());
    fs::write(&file, lines.join("\n") + "\n").unwrap();

    passwd(&["-b", text(&file), "bob", "b2"]).success();
    let after = fs::read_to_string(&file).unwrap();
    let after_lines: Vec<&str> = after.lines().collect();
    assert_eq!(after_lines.len(), 5, "{after}");
    for index in [0, 1, 2, 4] {
        assert_eq!(after_lines[index], lines[index], "line {}", index + 1);
    }
    assert!(after_lines[3].starts_with("bob:$7$101$"), "{after}");
    assert_ne!(after_lines[3], lines[3]);
    let users = load(&file);
    assert_eq!(
        users.usernames().collect::<Vec<_>>(),
        ["alice", "bob", "carol"]
    );
    assert!(users.verify("bob", b"b2"));
    assert!(!users.verify("bob", b"b1"));
    assert!(users.verify("alice", b"a1") && users.verify("carol", b"c1"));

    // -c starts over with one user.
    passwd(&["-c", "-b", text(&file), "dave", "d1"]).success();
    let users = load(&file);
    assert_eq!(users.usernames().collect::<Vec<_>>(), ["dave"]);
    assert!(users.verify("dave", b"d1"));
}

#[test]
fn delete_removes_a_user_and_says_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    passwd(&["-c", "-b", text(&file), "alice", "a1"]).success();
    passwd(&["-b", text(&file), "bob", "b1"]).success();
    passwd(&["-D", text(&file), "alice"]).success();
    let users = load(&file);
    assert_eq!(users.usernames().collect::<Vec<_>>(), ["bob"]);
    assert!(users.verify("bob", b"b1"));

    let kept = fs::read_to_string(&file).unwrap();
    let error = passwd(&["-D", text(&file), "alice"]).one_line_failure();
    assert_eq!(
        error,
        format!("mqtt: user `alice` is not in {}", file.display())
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), kept);

    let missing = dir.path().join("missing");
    let error = passwd(&["-D", text(&missing), "alice"]).one_line_failure();
    assert!(
        error.contains(&format!("cannot read {}", missing.display()))
            && error.contains("No such file")
            && error.contains("-c"),
        "{error}"
    );
    assert!(!missing.exists());
    // Adding to a missing file is the same error: only -c creates one.
    let error = passwd(&["-b", text(&missing), "alice", "x"]).one_line_failure();
    assert!(error.contains("No such file"), "{error}");
    assert!(!missing.exists());
}

/// -U hashes `user:password` lines in place and leaves hashes, comments and blank lines alone,
/// so that running it twice changes nothing (mosquitto_passwd -U would hash the hashes).
#[test]
fn hash_plain_hashes_plain_text_and_leaves_hashes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    passwd(&["-c", "-b", text(&file), "hashed", "h1"]).success();
    let hashed = fs::read_to_string(&file).unwrap();
    fs::write(
        &file,
        format!("alice:secret\n# plain text below\n\n{hashed} carol :  p:w d  \n"),
    )
    .unwrap();
    passwd(&["-U", text(&file)]).success();
    let once = fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = once.lines().collect();
    assert_eq!(lines.len(), 5, "{once}");
    assert!(lines[0].starts_with("alice:$7$101$"), "{once}");
    assert_eq!(lines[1..3], ["# plain text below", ""]);
    assert_eq!(lines[3], hashed.trim_end());
    assert!(lines[4].starts_with("carol:$7$101$"), "{once}");
    let users = load(&file);
    assert!(users.verify("alice", b"secret"));
    assert!(users.verify("hashed", b"h1"));
    // Blanks around the password are trimmed, as mosquitto trims them; `:` belongs to it.
    assert!(users.verify("carol", b"p:w d"));

    passwd(&["-U", text(&file)]).success();
    assert_eq!(fs::read_to_string(&file).unwrap(), once);

    // Something that looks like a hash and is not one is an error, not hashed as a password.
    fs::write(&file, "alice:secret\nbob:$7$101$broken\n").unwrap();
    let error = passwd(&["-U", text(&file)]).one_line_failure();
    assert!(
        error.contains("line 2") && error.contains("bob") && error.contains("malformed"),
        "{error}"
    );
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "alice:secret\nbob:$7$101$broken\n"
    );
    fs::write(&file, "alice:secret\njust a line\n").unwrap();
    let error = passwd(&["-U", text(&file)]).one_line_failure();
    assert!(
        error.contains("line 2") && error.contains("username:password"),
        "{error}"
    );
}

/// Without -b the password is asked for on the terminal; with standard input a pipe there is
/// none, which is a one-line error pointing at -b, and the file is left alone.
#[test]
fn prompting_needs_a_terminal_unless_batch() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let error = passwd(&["-c", text(&file), "alice"]).one_line_failure();
    assert!(
        error.contains("no terminal") && error.contains("-b"),
        "{error}"
    );
    assert!(!file.exists());
    passwd(&["-c", "-b", text(&file), "alice", "a1"]).success();
    let kept = fs::read_to_string(&file).unwrap();
    let error = passwd(&[text(&file), "alice"]).one_line_failure();
    assert!(error.contains("-b"), "{error}");
    assert_eq!(fs::read_to_string(&file).unwrap(), kept);
}

/// On a terminal (a pseudo-terminal from util-linux `script`) the password is asked for twice
/// and not echoed; two different answers are an error that leaves the file alone.
#[test]
fn prompts_twice_on_a_terminal_without_echo() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let Some((status, screen)) = on_terminal(
        &["-c", text(&file), "alice"],
        &[("Password: ", "s3cret"), ("Reenter password: ", "s3cret")],
    ) else {
        return;
    };
    assert!(status.success(), "{status}: {screen}");
    assert!(!screen.contains("s3cret"), "echoed: {screen:?}");
    assert!(load(&file).verify("alice", b"s3cret"));

    let kept = fs::read_to_string(&file).unwrap();
    let (status, screen) = on_terminal(
        &[text(&file), "alice"],
        &[("Password: ", "one"), ("Reenter password: ", "two")],
    )
    .unwrap();
    assert_eq!(status.code(), Some(1), "{screen}");
    assert!(
        screen.contains("mqtt: the passwords do not match"),
        "{screen:?}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), kept);
}

/// Runs `mqtt passwd ARGS` on a pseudo-terminal, typing each answer once its prompt has been
/// shown; returns the exit status and everything the terminal showed. `None` (the test is
/// skipped) when `script` is missing outside CI.
fn on_terminal(args: &[&str], answers: &[(&str, &str)]) -> Option<(ExitStatus, String)> {
    let script = find_program("script")?;
    let mut command = format!("'{}' passwd", env!("CARGO_BIN_EXE_mqtt"));
    for arg in args {
        assert!(!arg.contains('\''), "{arg}");
        command.push_str(&format!(" '{arg}'"));
    }
    let mut child = Command::new(script)
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let screen = Arc::clone(&screen);
        thread::spawn(move || {
            let mut buffer = [0; 256];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                screen.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        })
    };
    let shown = || String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    let deadline = Instant::now() + TIMEOUT;
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = 0;
    for (prompt, answer) in answers {
        // Wait for this prompt after the previous one, then type the answer.
        loop {
            let screen = shown();
            if let Some(at) = screen[seen..].find(prompt) {
                seen += at + prompt.len();
                break;
            }
            if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("no prompt {prompt:?}; the terminal showed {screen:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
        stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("did not finish; the terminal showed {:?}", shown());
        }
        thread::sleep(Duration::from_millis(10));
    };
    drop(stdin);
    reader.join().unwrap();
    Some((status, shown()))
}

#[test]
fn bad_user_names_and_passwords_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let long_name = "u".repeat(65_536);
    let cases = [
        ("a:b", "holds `:`"),
        ("", "is empty"),
        (" alice", "blanks around it"),
        ("#alice", "starts with `#`"),
        ("al\tice", "control character"),
        (long_name.as_str(), "longer than 65535 bytes"),
    ];
    for (username, needle) in cases {
        let error = passwd(&["-c", "-b", text(&file), username, "x"]).one_line_failure();
        assert!(error.contains(needle), "{username:?}: {error}");
        assert!(!file.exists(), "{username:?}");
    }
    passwd(&["-c", "-b", text(&file), "alice", "a1"]).success();
    let kept = fs::read_to_string(&file).unwrap();
    let error = passwd(&["-D", text(&file), "a:b"]).one_line_failure();
    assert!(error.contains("holds `:`"), "{error}");
    let long_password = "p".repeat(65_536);
    let error = passwd(&["-b", text(&file), "bob", &long_password]).one_line_failure();
    assert!(error.contains("longer than 65535 bytes"), "{error}");
    let longest = "p".repeat(65_535);
    passwd(&["-b", text(&file), "bob", &longest]).success();
    assert!(load(&file).verify("bob", longest.as_bytes()));
    passwd(&["-D", text(&file), "bob"]).success();
    assert_eq!(fs::read_to_string(&file).unwrap(), kept);
}

/// A new file is 0600; an existing file keeps its mode through every edit, and no temporary
/// file is left beside it.
#[cfg(unix)]
#[test]
fn new_files_are_private_and_edits_keep_permissions() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &PathBuf| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    passwd(&["-c", "-b", text(&file), "alice", "a1"]).success();
    assert_eq!(mode(&file), 0o600);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    passwd(&["-b", text(&file), "bob", "b1"]).success();
    assert_eq!(mode(&file), 0o640);
    passwd(&["-D", text(&file), "bob"]).success();
    assert_eq!(mode(&file), 0o640);
    passwd(&["-c", "-b", text(&file), "carol", "c1"]).success();
    assert_eq!(mode(&file), 0o640);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["passwd"]);

    // Through a symbolic link the file itself is edited, and the link stays a link.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    passwd(&["-b", text(&link), "dave", "d1"]).success();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(load(&file).verify("dave", b"d1"));
}

#[test]
fn help_lists_the_options_of_mosquitto_passwd() {
    let help = run(mqtt(["passwd", "--help"]), b"").success().stdout;
    for needle in [
        "-c", "-b", "-D", "-U", "FILE", "USER", "PASSWORD", "Examples",
    ] {
        assert!(
            help.contains(needle),
            "passwd --help lacks {needle}:\n{help}"
        );
    }
    let main = run(mqtt(["--help"]), b"").success().stdout;
    assert!(main.contains("passwd"), "{main}");
}
