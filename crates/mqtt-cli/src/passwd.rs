//! `mqtt passwd`: makes and edits password files for `mqtt broker` (`password_file`) and for
//! mosquitto, with the options of `mosquitto_passwd` 2.0 (`-c`, `-b`, `-D`, `-U`).
//!
//! New entries are what `mosquitto_passwd` 2.0 writes, `username:$7$101$SALT$HASH`:
//! PBKDF2-HMAC-SHA512 with 101 iterations over a 12-byte salt from the operating system, salt
//! and 64-byte hash in padded base64 ([`PasswordHash::new`]). mosquitto 2.0 and `mqtt broker`
//! both read them.
//!
//! Where it differs from `mosquitto_passwd`, on purpose:
//! - `-U` leaves an entry that already holds a hash alone; `mosquitto_passwd -U` hashes it again
//!   (its manual page warns that this makes the file unusable). `-U` is safe to run twice.
//! - `-U` hashes everything after the first `:` as the password; `mosquitto_passwd` stops at a
//!   second `:`.
//! - Blank lines and `#` comments, which both brokers skip, are kept; `mosquitto_passwd` calls
//!   them corrupt (and drops a comment while adding a user).
//! - The password is prompted for only on a terminal (through `rpassword`, which turns echo off
//!   and restores it on every path); otherwise `-b` is needed. `mosquitto_passwd` would read a
//!   line of its standard input.
//! - The file is never half-written: the new text goes to a temporary file in the same
//!   directory, is synced, then renamed over the old one, which keeps its permissions and owner
//!   (a new file gets 0600). `mosquitto_passwd` rewrites the file in place after copying it to
//!   `FILE.tmp`.
//! - User names that a broker would not read back as given (blanks around them, a leading `#`)
//!   are refused as well as those `mosquitto_passwd` refuses (`:`, control characters, over
//!   65535 bytes); see [`PasswordFile::check_username`]. Passwords, as there, may be at most
//!   65535 bytes, MQTT's limit; an empty one is refused at the prompt and allowed with `-b`.

use std::fs::{self, Metadata};
use std::io::{ErrorKind, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use mqtt_tokio::broker::{PasswordFile, PasswordHash};

/// The longest password in bytes: MQTT's limit for binary data, and `mosquitto_passwd`'s.
const MAX_PASSWORD_LEN: usize = 65_535;

/// Create and edit password files for `mqtt broker` (`password_file`) and mosquitto, as
/// mosquitto_passwd does.
///
/// Entries are `user:$7$101$SALT$HASH` (PBKDF2-HMAC-SHA512), the format of mosquitto 2.0.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  mqtt passwd -c /etc/mqtt/passwd alice      create the file with alice (asks for the password)
  mqtt passwd /etc/mqtt/passwd bob           add bob, or change his password
  mqtt passwd -b /etc/mqtt/passwd bob s3cret add or change without asking
  mqtt passwd -D /etc/mqtt/passwd bob        delete bob
  mqtt passwd -U /etc/mqtt/passwd            hash a file of user:password lines in place")]
pub(crate) struct Args {
    /// Create FILE with USER alone, overwriting FILE if it exists.
    #[arg(short = 'c', long = "create", conflicts_with_all = ["delete", "hash_plain"])]
    create: bool,
    /// Batch mode: take the password from the command line (where `ps` and the shell history
    /// can show it) instead of asking for it.
    #[arg(short = 'b', long = "batch", requires = "password", conflicts_with_all = ["delete", "hash_plain"])]
    batch: bool,
    /// Delete USER from FILE.
    #[arg(short = 'D', long = "delete", conflicts_with = "hash_plain")]
    delete: bool,
    /// Hash the plain-text passwords of FILE, `user:password` lines, in place. Entries that
    /// already hold a hash are left as they are.
    #[arg(short = 'U', long = "hash-plain", conflicts_with = "username")]
    hash_plain: bool,
    /// The password file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The user to add, change or delete.
    #[arg(value_name = "USER", required_unless_present = "hash_plain")]
    username: Option<String>,
    /// The password (with -b only).
    #[arg(value_name = "PASSWORD", requires = "batch")]
    password: Option<String>,
}

/// Runs `mqtt passwd`. Nothing here is asynchronous: the file is small and the prompt blocks.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let target = Target::resolve(&args.file)?;
    if args.hash_plain {
        let mut lines = target.read_lines("")?;
        lines
            .hash_plain()
            .with_context(|| args.file.display().to_string())?;
        return target.replace(&lines.to_string());
    }
    let username = args.username.as_deref().context("USER is missing")?;
    PasswordFile::check_username(username)?;
    let mut lines = if args.create {
        Lines::default()
    } else {
        // Before the prompt, so that a missing or broken file is reported first.
        target.read_lines(" (create it with -c)")?
    };
    if args.delete {
        if !lines.remove(username) {
            bail!("user `{username}` is not in {}", args.file.display());
        }
    } else {
        let password = password(&args)?;
        let hash = PasswordHash::new(password.as_bytes())?;
        lines.set(username, &hash);
    }
    target.replace(&lines.to_string())
}

/// The password from the command line (-b), or asked for twice on the terminal.
fn password(args: &Args) -> anyhow::Result<String> {
    let password = match &args.password {
        Some(password) if args.batch => password.clone(),
        _ => prompt()?,
    };
    check_password(&password)?;
    Ok(password)
}

fn prompt() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no terminal to ask for the password on (standard input is not one): give it on \
             the command line with -b, as in `mqtt passwd -b FILE USER PASSWORD`"
        );
    }
    let ask = |prompt: &str| rpassword::prompt_password(prompt).context("cannot read the password");
    let first = ask("Password: ")?;
    if first.is_empty() {
        bail!("empty password");
    }
    if ask("Reenter password: ")? != first {
        bail!("the passwords do not match");
    }
    Ok(first)
}

fn check_password(password: &str) -> anyhow::Result<()> {
    if password.len() > MAX_PASSWORD_LEN {
        bail!("the password is longer than {MAX_PASSWORD_LEN} bytes, the most MQTT can carry");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The file as lines

/// A password file as its lines, so that an edit keeps every other line as it was.
#[derive(Debug, Default)]
struct Lines(Vec<Line>);

#[derive(Debug)]
enum Line {
    /// A blank line or a `#` comment, which both brokers skip.
    Other(String),
    /// `username:value`; the user name trimmed, as both brokers read it.
    Entry { username: String, text: String },
}

impl Lines {
    /// Splits a file's text into lines; a line that is neither blank, a comment nor
    /// `username:value` is an error naming it.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                lines.push(Line::Other(line.to_owned()));
                continue;
            }
            let username = match trimmed.split_once(':') {
                Some((username, _)) if !username.trim().is_empty() => username.trim(),
                _ => bail!(
                    "line {}: expected `username:password` or `username:hash`",
                    index + 1
                ),
            };
            lines.push(Line::Entry {
                username: username.to_owned(),
                text: line.to_owned(),
            });
        }
        Ok(Self(lines))
    }

    /// Gives `username` this hash: its line is rewritten in place (a second line for the same
    /// user, which a broker would refuse, is dropped), or a line is added at the end.
    fn set(&mut self, username: &str, hash: &PasswordHash) {
        let new = format!("{username}:{hash}");
        let mut found = false;
        self.0.retain_mut(|line| match line {
            Line::Entry { username: name, .. } if name == username && found => false,
            Line::Entry {
                username: name,
                text,
            } if name == username => {
                *text = new.clone();
                found = true;
                true
            }
            _ => true,
        });
        if !found {
            self.0.push(Line::Entry {
                username: username.to_owned(),
                text: new,
            });
        }
    }

    /// Removes every line of `username`; returns whether there was one.
    fn remove(&mut self, username: &str) -> bool {
        let before = self.0.len();
        self.0
            .retain(|line| !matches!(line, Line::Entry { username: name, .. } if name == username));
        self.0.len() != before
    }

    /// Hashes every plain-text password. A value that parses as a `$7$` or `$6$` hash is a hash
    /// already and is left alone; one that starts like a hash but does not parse is an error,
    /// rather than a hash of a broken hash.
    fn hash_plain(&mut self) -> anyhow::Result<()> {
        for (index, line) in self.0.iter_mut().enumerate() {
            let Line::Entry { username, text } = line else {
                continue;
            };
            let number = index + 1;
            let value = text
                .split_once(':')
                .map(|(_, value)| value.trim())
                .unwrap_or_default();
            if value.starts_with("$6$") || value.starts_with("$7$") {
                value
                    .parse::<PasswordHash>()
                    .with_context(|| format!("line {number}: user `{username}`"))?;
                continue;
            }
            if value.is_empty() {
                bail!("line {number}: user `{username}` has no password");
            }
            check_password(value).with_context(|| format!("line {number}"))?;
            let hash = PasswordHash::new(value.as_bytes())?;
            *text = format!("{username}:{hash}");
        }
        Ok(())
    }
}

impl std::fmt::Display for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.0 {
            let (Line::Other(text) | Line::Entry { text, .. }) = line;
            writeln!(f, "{text}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading and replacing the file

/// The file to read and replace: symbolic links followed (as `mosquitto_passwd` does, so that
/// the link stays a link), with what it was when it exists.
struct Target {
    /// As given, for messages.
    given: PathBuf,
    /// The file itself.
    path: PathBuf,
    /// Its permissions and owner, to keep; `None` when it does not exist yet.
    metadata: Option<Metadata>,
}

impl Target {
    fn resolve(given: &Path) -> anyhow::Result<Self> {
        let (path, metadata) = match fs::canonicalize(given) {
            Ok(path) => {
                let metadata = fs::metadata(&path)
                    .with_context(|| format!("cannot read {}", given.display()))?;
                (path, Some(metadata))
            }
            Err(error) if error.kind() == ErrorKind::NotFound => (given.to_owned(), None),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", given.display()));
            }
        };
        Ok(Self {
            given: given.to_owned(),
            path,
            metadata,
        })
    }

    /// Reads and splits the file; `hint` follows the error when there is no file.
    fn read_lines(&self, hint: &str) -> anyhow::Result<Lines> {
        let text = fs::read_to_string(&self.path).map_err(|error| {
            let hint = if error.kind() == ErrorKind::NotFound {
                hint
            } else {
                ""
            };
            anyhow::anyhow!("cannot read {}: {error}{hint}", self.given.display())
        })?;
        Lines::parse(&text).with_context(|| self.given.display().to_string())
    }

    /// Writes `text` to a temporary file beside the target, syncs it, and renames it over the
    /// target: a crash leaves the old file or the new one, never a mix.
    fn replace(&self, text: &str) -> anyhow::Result<()> {
        let given = self.given.display();
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = self
            .path
            .file_name()
            .with_context(|| format!("{given} is not a file name"))?;
        let mut temporary = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        write_contents(temporary.as_file_mut(), text, self.metadata.as_ref())
            .with_context(|| format!("cannot write the new {given}"))?;
        #[cfg(unix)]
        if let Some(metadata) = &self.metadata {
            keep_owner(temporary.as_file(), metadata)
                .with_context(|| format!("cannot keep the owner of {given}"))?;
        }
        temporary
            .as_file()
            .sync_all()
            .with_context(|| format!("cannot write the new {given}"))?;
        temporary
            .persist(&self.path)
            .map_err(|error| error.error)
            .with_context(|| format!("cannot replace {given}"))?;
        // The rename itself is durable once the directory is synced.
        #[cfg(unix)]
        fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
        Ok(())
    }
}

/// Writes the text and the permissions: those of the old file, or 0600 for a new one on Unix
/// (the hashes are a head start for offline guessing).
fn write_contents(file: &mut fs::File, text: &str, old: Option<&Metadata>) -> std::io::Result<()> {
    file.write_all(text.as_bytes())?;
    match old {
        Some(old) => file.set_permissions(old.permissions()),
        #[cfg(unix)]
        None => {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(fs::Permissions::from_mode(0o600))
        }
        #[cfg(not(unix))]
        None => Ok(()),
    }
}

/// Gives the new file the owner and group of the old one when they differ (a file of the
/// broker's user, edited by root). Failing that is an error: a password file the broker can no
/// longer read would lock everyone out at its next start.
#[cfg(unix)]
fn keep_owner(file: &fs::File, old: &Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let new = file.metadata()?;
    if (new.uid(), new.gid()) == (old.uid(), old.gid()) {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!(
                "{error} (it belongs to uid {} gid {}: run as that user or as root)",
                old.uid(),
                old.gid()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# admins\r\n bob : plain\n\nalice:x\nbob:y\n";

    #[test]
    fn set_rewrites_the_first_line_of_a_user_and_drops_the_others() {
        let mut lines = Lines::parse(FILE).unwrap();
        let hash = PasswordHash::new(b"pw").unwrap();
        lines.set("bob", &hash);
        assert_eq!(
            lines.to_string(),
            format!("# admins\nbob:{hash}\n\nalice:x\n")
        );
        lines.set("carol", &hash);
        assert!(
            lines
                .to_string()
                .ends_with(&format!("alice:x\ncarol:{hash}\n"))
        );
    }

    #[test]
    fn remove_drops_every_line_of_a_user() {
        let mut lines = Lines::parse(FILE).unwrap();
        assert!(lines.remove("bob"));
        assert!(!lines.remove("bob"));
        assert_eq!(lines.to_string(), "# admins\n\nalice:x\n");
    }

    #[test]
    fn lines_without_a_user_name_are_errors() {
        for (text, line) in [("a:x\nnot a line\n", 2), (":x\n", 1), ("  : x\n", 1)] {
            let error = Lines::parse(text).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("line {line}: ")),
                "{text:?}: {error}"
            );
        }
    }
}
