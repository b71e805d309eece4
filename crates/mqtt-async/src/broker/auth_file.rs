//! Built-in authentication and authorization from files in mosquitto's formats.
//!
//! - [`PasswordFile`]: who may connect, from a password file as `mosquitto_passwd` writes it,
//!   one `username:hash` per line. Both of its hash formats are read: `$7$` (PBKDF2-HMAC-SHA512,
//!   mosquitto 2's default) and `$6$` (salted SHA-512, mosquitto 1.6 and earlier). New entries
//!   are `$7$` with 101 iterations and a random salt, as `mosquitto_passwd` makes them.
//! - [`AclFile`]: who may publish and subscribe where, from an ACL file in a subset of
//!   mosquitto's format.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use mqtt_proto::ReasonCode;
use mqtt_proto::packet::Connect;
use mqtt_proto::topic;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::{AuthDecision, Authenticator, Authorizer, ClientInfo};

/// Bytes of a SHA-512 digest: the stored hash of both formats.
const HASH_LEN: usize = 64;

/// Bytes of salt in a new entry, as `mosquitto_passwd` makes them.
const SALT_LEN: usize = 12;

/// Reads base64 with or without its `=` padding; writes it padded, as mosquitto does.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a password or ACL file, or a hash, could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFileError {
    /// The file could not be read: check its path and permissions.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A line is not understood: fix that line.
    #[error("{}line {line}: {reason}", display_prefix(path))]
    Syntax {
        /// The file, when the text was read from one.
        path: Option<PathBuf>,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument cannot be stored (a user name with `:`, zero iterations, a malformed hash):
    /// pass another.
    #[error("{0}")]
    Invalid(String),
    /// The operating system gave no random bytes for a salt; retry, or check the system.
    #[error("no random bytes for a salt: {0}")]
    Random(String),
}

fn display_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|path| format!("{}: ", path.display()))
        .unwrap_or_default()
}

impl AuthFileError {
    /// Attributes a syntax error to the file it came from.
    fn in_file(self, file: &Path) -> Self {
        match self {
            AuthFileError::Syntax { line, reason, .. } => AuthFileError::Syntax {
                path: Some(file.to_owned()),
                line,
                reason,
            },
            other => other,
        }
    }
}

fn read_file(path: &Path) -> Result<String, AuthFileError> {
    std::fs::read_to_string(path).map_err(|source| AuthFileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The lines worth reading: numbered from 1, trimmed, without blank lines and `#` comments.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

fn syntax(line: usize, reason: impl Into<String>) -> AuthFileError {
    AuthFileError::Syntax {
        path: None,
        line,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Passwords

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// `$6$`: SHA-512 over the password then the salt.
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 { iterations: u32 },
}

/// One hashed password, in the format of `mosquitto_passwd`: `$7$ITERATIONS$SALT$HASH`
/// (PBKDF2-HMAC-SHA512) or `$6$SALT$HASH` (salted SHA-512), salt and hash in base64.
///
/// Parse one with [`str::parse`], make one with [`PasswordHash::new`], write one with
/// `to_string()`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    scheme: Scheme,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash in a log is a head start for an offline guess: leave it out.
        f.debug_struct("PasswordHash")
            .field("iterations", &self.iterations())
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// PBKDF2 iterations of a new hash: `mosquitto_passwd`'s default.
    pub const DEFAULT_ITERATIONS: u32 = 101;

    /// Hashes `password` as `mosquitto_passwd` does by default: `$7$`, 101 iterations, a fresh
    /// 12-byte random salt.
    pub fn new(password: &[u8]) -> Result<Self, AuthFileError> {
        Self::with_iterations(password, Self::DEFAULT_ITERATIONS)
    }

    /// Hashes `password` with PBKDF2-HMAC-SHA512 (`$7$`), this many iterations (at least 1)
    /// and a fresh random salt.
    pub fn with_iterations(password: &[u8], iterations: u32) -> Result<Self, AuthFileError> {
        if iterations == 0 {
            return Err(AuthFileError::Invalid(
                "PBKDF2 needs at least one iteration".into(),
            ));
        }
        let mut salt = vec![0; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|error| AuthFileError::Random(error.to_string()))?;
        let scheme = Scheme::Pbkdf2Sha512 { iterations };
        let hash = compute(scheme, &salt, password);
        Ok(Self { scheme, salt, hash })
    }

    /// The PBKDF2 iteration count of a `$7$` hash; `None` for `$6$`.
    pub fn iterations(&self) -> Option<u32> {
        match self.scheme {
            Scheme::Sha512 => None,
            Scheme::Pbkdf2Sha512 { iterations } => Some(iterations),
        }
    }

    /// Whether `password` is the one hashed, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let computed = compute(self.scheme, &self.salt, password);
        computed.ct_eq(&self.hash).into()
    }
}

fn compute(scheme: Scheme, salt: &[u8], password: &[u8]) -> [u8; HASH_LEN] {
    let mut out = [0; HASH_LEN];
    match scheme {
        Scheme::Sha512 => {
            let digest = Sha512::new()
                .chain_update(password)
                .chain_update(salt)
                .finalize();
            out.copy_from_slice(&digest);
        }
        Scheme::Pbkdf2Sha512 { iterations } => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
        }
    }
    out
}

impl FromStr for PasswordHash {
    type Err = AuthFileError;

    fn from_str(text: &str) -> Result<Self, AuthFileError> {
        let invalid = |reason: &str| AuthFileError::Invalid(reason.to_owned());
        let fields: Vec<&str> = text.split('$').collect();
        let (scheme, salt, hash) = match fields.as_slice() {
            ["", "7", iterations, salt, hash] => {
                let iterations = iterations
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| invalid("the iteration count is not a number from 1"))?;
                (Scheme::Pbkdf2Sha512 { iterations }, salt, hash)
            }
            ["", "6", salt, hash] => (Scheme::Sha512, salt, hash),
            ["", kind, ..] if *kind != "6" && *kind != "7" => {
                return Err(AuthFileError::Invalid(format!(
                    "unknown hash type `${kind}$` (expected `$7$` or `$6$` from mosquitto_passwd)"
                )));
            }
            [_] => {
                return Err(invalid(
                    "not a hash (plain-text passwords are not accepted: hash the file with \
                     `mosquitto_passwd -U` or `mqtt passwd`)",
                ));
            }
            _ => {
                return Err(invalid(
                    "malformed hash (expected `$7$ITERATIONS$SALT$HASH` or `$6$SALT$HASH`)",
                ));
            }
        };
        let salt = BASE64_LENIENT
            .decode(salt)
            .ok()
            .filter(|salt| !salt.is_empty())
            .ok_or_else(|| invalid("the salt is not base64"))?;
        let hash = BASE64_LENIENT
            .decode(hash)
            .ok()
            .and_then(|hash| <[u8; HASH_LEN]>::try_from(hash).ok())
            .ok_or_else(|| invalid("the hash is not 64 bytes of base64"))?;
        Ok(Self { scheme, salt, hash })
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let salt = STANDARD.encode(&self.salt);
        let hash = STANDARD.encode(self.hash);
        match self.scheme {
            Scheme::Sha512 => write!(f, "$6${salt}${hash}"),
            Scheme::Pbkdf2Sha512 { iterations } => write!(f, "$7${iterations}${salt}${hash}"),
        }
    }
}

/// Authentication from a password file: a client gets in with a user name and password found
/// in it, or, when [allowed](PasswordFile::allow_anonymous), without a user name.
///
/// A wrong or unknown user name or password is refused with 0x86 Bad User Name or Password
/// (3.1.1: return code 4); a client without a user name, when anonymous access is off, with
/// 0x87 Not authorized (3.1.1: 5).
///
/// It is also how files are written: [`PasswordFile::set_password`], then `to_string()` gives
/// the file's text, one `username:hash` line per user in user name order.
#[derive(Clone)]
pub struct PasswordFile {
    users: BTreeMap<String, PasswordHash>,
    allow_anonymous: bool,
    /// Checked against when the user is unknown, so that an unknown user takes as long to
    /// refuse as a wrong password.
    decoy: PasswordHash,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

impl Default for PasswordFile {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordFile {
    /// No users, anonymous access off: nobody gets in until users are added.
    pub fn new() -> Self {
        Self {
            users: BTreeMap::new(),
            allow_anonymous: false,
            decoy: PasswordHash {
                scheme: Scheme::Pbkdf2Sha512 {
                    iterations: PasswordHash::DEFAULT_ITERATIONS,
                },
                salt: vec![0; SALT_LEN],
                hash: [0; HASH_LEN],
            },
        }
    }

    /// Reads the text of a password file: `username:hash` lines; blank lines and lines starting
    /// with `#` are skipped. A user listed twice, an empty name or a hash that is not `$7$` or
    /// `$6$` is an error naming the line.
    pub fn parse(text: &str) -> Result<Self, AuthFileError> {
        let mut file = Self::new();
        for (number, line) in content_lines(text) {
            let (username, hash) = line.split_once(':').ok_or_else(|| {
                syntax(
                    number,
                    "expected `username:hash` (as mosquitto_passwd writes)",
                )
            })?;
            let username = username.trim();
            if username.is_empty() {
                return Err(syntax(number, "empty user name"));
            }
            let hash = hash
                .trim()
                .parse::<PasswordHash>()
                .map_err(|error| syntax(number, format!("user `{username}`: {error}")))?;
            if file.users.insert(username.to_owned(), hash).is_some() {
                return Err(syntax(number, format!("user `{username}` listed twice")));
            }
        }
        Ok(file)
    }

    /// Reads a password file; errors name the file and the line.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AuthFileError> {
        let path = path.as_ref();
        Self::parse(&read_file(path)?).map_err(|error| error.in_file(path))
    }

    /// Whether a client without a user name may connect (default: no).
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// Adds a user, or replaces its hash. The user name must pass
    /// [`check_username`](Self::check_username).
    pub fn insert(
        &mut self,
        username: impl Into<String>,
        hash: PasswordHash,
    ) -> Result<(), AuthFileError> {
        let username = username.into();
        Self::check_username(&username)?;
        self.users.insert(username, hash);
        Ok(())
    }

    /// Whether `username` can be stored in a password file and read back as it is, by this
    /// broker and by mosquitto: not empty, at most [`MAX_USERNAME_LEN`](Self::MAX_USERNAME_LEN)
    /// bytes, without `:` or control characters (as `mosquitto_passwd` requires), without
    /// blanks around it (both brokers trim them) and not starting with `#` (both read the line
    /// as a comment).
    pub fn check_username(username: &str) -> Result<(), AuthFileError> {
        let reason = if username.is_empty() {
            "is empty"
        } else if username.len() > Self::MAX_USERNAME_LEN {
            "is longer than 65535 bytes, the most MQTT can carry"
        } else if username.contains(':') {
            "holds `:`, which ends the user name in a password file"
        } else if username.contains(char::is_control) {
            "holds a control character"
        } else if username.trim() != username {
            "has blanks around it, which a broker trims when reading the file"
        } else if username.starts_with('#') {
            "starts with `#`, which makes its line a comment"
        } else {
            return Ok(());
        };
        // The name in full would make an over-long error; its start is enough to find it.
        let shown: String = username.chars().take(40).collect();
        let more = if shown.len() < username.len() {
            "…"
        } else {
            ""
        };
        Err(AuthFileError::Invalid(format!(
            "user name {shown:?}{more} {reason}"
        )))
    }

    /// The longest user name in bytes: MQTT's limit for a string (two length bytes), and
    /// `mosquitto_passwd`'s.
    pub const MAX_USERNAME_LEN: usize = 65_535;

    /// Hashes `password` ([`PasswordHash::new`]) and stores it for `username`.
    pub fn set_password(
        &mut self,
        username: impl Into<String>,
        password: &[u8],
    ) -> Result<(), AuthFileError> {
        self.insert(username, PasswordHash::new(password)?)
    }

    /// Removes a user; returns whether it was there.
    pub fn remove(&mut self, username: &str) -> bool {
        self.users.remove(username).is_some()
    }

    /// The user names, in order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `username` is known and `password` is its password.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) => hash.verify(password),
            None => {
                let _ = self.decoy.verify(password);
                false
            }
        }
    }
}

impl FromStr for PasswordFile {
    type Err = AuthFileError;

    fn from_str(text: &str) -> Result<Self, AuthFileError> {
        Self::parse(text)
    }
}

impl fmt::Display for PasswordFile {
    /// The file's text: one `username:hash` line per user.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (username, hash) in &self.users {
            writeln!(f, "{username}:{hash}")?;
        }
        Ok(())
    }
}

impl Authenticator for PasswordFile {
    fn connect(&mut self, connect: &Connect) -> AuthDecision {
        match (&connect.username, &connect.password) {
            (None, _) if self.allow_anonymous => AuthDecision::Accept,
            (None, _) => AuthDecision::Refuse(ReasonCode::NotAuthorized),
            (Some(username), Some(password)) if self.verify(username, password) => {
                AuthDecision::Accept
            }
            (Some(_), _) => AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Access control

/// What a rule of an [`AclFile`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Subscribe (and so receive).
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Neither, whatever other rules grant: publishing to a topic it matches is refused, a
    /// subscription it matches literally is refused, and messages on topics it matches are not
    /// delivered through a wider subscription (mosquitto's `deny`).
    Deny,
}

impl Access {
    fn allows_read(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn allows_write(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

#[derive(Debug, Clone)]
struct Rule {
    access: Access,
    filter: String,
}

/// Authorization from an ACL file in a subset of mosquitto's format:
///
/// ```text
/// # Rules before any `user` line apply to clients without a user name.
/// topic read public/#
///
/// user alice
/// topic readwrite home/#
/// # No access word: readwrite.
/// topic alerts
///
/// # Patterns apply to every client: %c is its client identifier, %u its user name.
/// pattern write devices/%c/status
/// pattern read users/%u/#
/// ```
///
/// A `deny` rule (`topic deny secret/#`, `pattern deny %u/private`) wins over every grant, as in
/// mosquitto: publishing to a topic it matches is refused; a subscription whose filter it
/// matches (taken literally, so `secret/+` under `deny secret/#`) is refused; and a message on
/// a topic it matches is not delivered to the client through a wider subscription (`#`).
///
/// Publishing needs `write` access to a rule whose filter matches the topic. Subscribing needs
/// `read` access to a rule whose filter covers the subscription's: `home/+` is allowed by
/// `home/#`, but `home/#` is not allowed by `home/+`. A shared subscription `$share/g/f` is
/// checked on `f`. A `%c` or `%u` standing for a value that holds `+` or `#` (or a `%u` of a
/// client without a user name) makes its pattern grant nothing. User names and filters run to
/// the end of their line, spaces included.
///
/// What no rule allows is refused; an empty `AclFile` refuses everything.
///
/// ```no_run
/// use mqtt_async::broker::{AclFile, PasswordFile};
///
/// # fn run() -> Result<(), mqtt_async::broker::AuthFileError> {
/// let passwords = PasswordFile::load("/etc/mqtt/passwd")?.allow_anonymous(false);
/// let acl = AclFile::load("/etc/mqtt/acl")?;
/// // Then: Broker::builder().authenticator(passwords).authorizer(acl)
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
    /// Some rule is a `deny`: deliveries are checked.
    deny: bool,
}

impl AclFile {
    /// No rules: everything is refused until rules are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the text of an ACL file. Blank lines and lines starting with `#` are skipped; an
    /// unknown keyword or a missing or invalid filter is an error naming the line.
    pub fn parse(text: &str) -> Result<Self, AuthFileError> {
        let mut acl = Self::new();
        let mut user: Option<String> = None;
        for (number, line) in content_lines(text) {
            let (keyword, rest) = match line.split_once(char::is_whitespace) {
                Some((keyword, rest)) => (keyword, rest.trim()),
                None => (line, ""),
            };
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(syntax(number, "`user` without a user name"));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    user = Some(rest.to_owned());
                }
                "topic" => {
                    let (access, filter) = parse_rule(rest).map_err(|e| syntax(number, e))?;
                    acl.add_topic(user.as_deref(), access, filter)
                        .map_err(|e| syntax(number, e.to_string()))?;
                }
                "pattern" => {
                    let (access, filter) = parse_rule(rest).map_err(|e| syntax(number, e))?;
                    acl.add_pattern(access, filter)
                        .map_err(|e| syntax(number, e.to_string()))?;
                }
                other => {
                    return Err(syntax(
                        number,
                        format!("unknown keyword `{other}` (expected user, topic or pattern)"),
                    ));
                }
            }
        }
        Ok(acl)
    }

    /// Reads an ACL file; errors name the file and the line.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AuthFileError> {
        let path = path.as_ref();
        Self::parse(&read_file(path)?).map_err(|error| error.in_file(path))
    }

    /// Adds a `topic` rule for `username`, or for clients without a user name (`None`).
    pub fn add_topic(
        &mut self,
        username: Option<&str>,
        access: Access,
        filter: &str,
    ) -> Result<(), AuthFileError> {
        check_rule_filter(filter)?;
        self.deny |= access == Access::Deny;
        let rule = Rule {
            access,
            filter: filter.to_owned(),
        };
        match username {
            Some(username) => self
                .users
                .entry(username.to_owned())
                .or_default()
                .push(rule),
            None => self.anonymous.push(rule),
        }
        Ok(())
    }

    /// Adds a `pattern` rule, for every client: `%c` stands for its client identifier, `%u`
    /// for its user name.
    pub fn add_pattern(&mut self, access: Access, filter: &str) -> Result<(), AuthFileError> {
        // Checked with a stand-in for each substitution: a valid value keeps it valid.
        check_rule_filter(&filter.replace("%c", "c").replace("%u", "u"))?;
        self.deny |= access == Access::Deny;
        self.patterns.push(Rule {
            access,
            filter: filter.to_owned(),
        });
        Ok(())
    }

    /// Whether `client` may publish to `topic`: no `deny` rule matches it, and some rule with
    /// write access does.
    pub fn may_publish(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        let matches = |filter: &str| topic::matches(filter, topic);
        !self.denies(client, matches) && self.allows(client, Access::allows_write, matches)
    }

    /// Whether `client` may receive a message on `topic` through a subscription it was allowed:
    /// no `deny` rule matches the topic.
    pub fn may_receive(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        !self.denies(client, |filter| topic::matches(filter, topic))
    }

    fn has_deny_rules(&self) -> bool {
        self.deny
    }

    /// Whether `client` may subscribe to `filter`: some rule with read access covers it (every
    /// topic `filter` matches, the rule matches). A shared subscription is checked on its
    /// filter.
    pub fn may_subscribe(&self, client: ClientInfo<'_>, filter: &str) -> bool {
        let filter = if filter.starts_with("$share/") {
            match topic::parse_shared(filter) {
                Some(shared) => shared.filter,
                None => return false,
            }
        } else {
            filter
        };
        // mosquitto matches `deny` rules against the filter as if it were a topic name.
        !self.denies(client, |denied| topic::matches(denied, filter))
            && self.allows(client, Access::allows_read, |allowed| {
                filter_covers(allowed, filter)
            })
    }

    /// Whether a `deny` rule for `client` matches.
    fn denies(&self, client: ClientInfo<'_>, matches: impl Fn(&str) -> bool) -> bool {
        self.allows(client, |access| access == Access::Deny, matches)
    }

    fn allows(
        &self,
        client: ClientInfo<'_>,
        access: fn(Access) -> bool,
        matches: impl Fn(&str) -> bool,
    ) -> bool {
        let rules = match client.username {
            Some(username) => self.users.get(username).map(Vec::as_slice),
            None => Some(self.anonymous.as_slice()),
        };
        let by_topic = rules
            .unwrap_or_default()
            .iter()
            .any(|rule| access(rule.access) && matches(&rule.filter));
        by_topic
            || self.patterns.iter().any(|rule| {
                access(rule.access)
                    && substitute(&rule.filter, client).is_some_and(|filter| matches(&filter))
            })
    }
}

impl FromStr for AclFile {
    type Err = AuthFileError;

    fn from_str(text: &str) -> Result<Self, AuthFileError> {
        Self::parse(text)
    }
}

impl Authorizer for AclFile {
    fn publish(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        self.may_publish(client, topic)
    }

    fn subscribe(&self, client: ClientInfo<'_>, filter: &str) -> bool {
        self.may_subscribe(client, filter)
    }

    fn deliver(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        self.may_receive(client, topic)
    }

    fn checks_delivery(&self) -> bool {
        self.has_deny_rules()
    }
}

/// `[read|write|readwrite] FILTER`; without an access word, readwrite.
fn parse_rule(rest: &str) -> Result<(Access, &str), String> {
    let (word, after) = match rest.split_once(char::is_whitespace) {
        Some((word, after)) => (word, after.trim()),
        None => (rest, ""),
    };
    let access = match word {
        "read" => Access::Read,
        "write" => Access::Write,
        "readwrite" => Access::ReadWrite,
        "deny" => Access::Deny,
        _ if rest.is_empty() => return Err("missing topic filter".into()),
        _ => return Ok((Access::ReadWrite, rest)),
    };
    if after.is_empty() {
        return Err(format!("missing topic filter after `{word}`"));
    }
    Ok((access, after))
}

fn check_rule_filter(filter: &str) -> Result<(), AuthFileError> {
    if filter.starts_with("$share/") {
        return Err(AuthFileError::Invalid(format!(
            "`{filter}`: rules name topics; a shared subscription is checked on its filter"
        )));
    }
    topic::check_topic_filter(filter)
        .map_err(|error| AuthFileError::Invalid(format!("`{filter}`: {error}")))
}

/// A pattern's filter for one client; `None` when the pattern cannot apply to it: a `%u` and no
/// user name, or a value holding a wildcard (it would widen the rule).
fn substitute(pattern: &str, client: ClientInfo<'_>) -> Option<String> {
    let safe = |value: &str| !value.contains(['+', '#']);
    let mut filter = pattern.to_owned();
    if filter.contains("%c") {
        if !safe(client.client_id) {
            return None;
        }
        filter = filter.replace("%c", client.client_id);
    }
    if filter.contains("%u") {
        let username = client.username.filter(|u| safe(u))?;
        filter = filter.replace("%u", username);
    }
    Some(filter)
}

/// Whether every topic that `filter` matches, `allowed` matches too: `a/b` and `a/+` are within
/// `a/+` and `a/#`, `a/#` is within `a/#` but not `a/+`. Both are valid, non-shared filters.
///
/// One case is refused that could be allowed: `#` at the top level is within `+/#` (a topic has
/// at least one level), which this level-by-level check does not see.
fn filter_covers(allowed: &str, filter: &str) -> bool {
    // A filter starting with a wildcard matches no topic starting with `$` (MQTT-4.7.2-1), so
    // it cannot cover a filter naming such topics.
    if filter.starts_with('$') && (allowed.starts_with('+') || allowed.starts_with('#')) {
        return false;
    }
    let mut levels = filter.split('/');
    for wanted in allowed.split('/') {
        match (wanted, levels.next()) {
            // The rest of `filter`, including nothing (`a/#` matches `a`).
            ("#", _) => return true,
            // `filter` stopped short: it matches a topic `allowed` does not.
            (_, None) => return false,
            // Any number of levels where `allowed` wants exactly one, or one named level.
            (_, Some("#")) => return false,
            ("+", Some(_)) => {}
            (literal, Some(level)) => {
                if literal != level {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mqtt_proto::packet::Version;

    use super::*;

    fn client<'a>(client_id: &'a str, username: Option<&'a str>) -> ClientInfo<'a> {
        ClientInfo {
            client_id,
            username,
        }
    }

    fn connect(username: Option<&str>, password: Option<&[u8]>) -> Connect {
        let mut connect = Connect::new(Version::V5, "c1");
        connect.username = username.map(Into::into);
        connect.password = password.map(Bytes::copy_from_slice);
        connect
    }

    /// Made by mosquitto_passwd 2.0.11: `-b` (`$7$`, alice: secret, bob: `p:w d`) and
    /// `-H sha512 -b` (`$6$`, erin: hunter2).
    const MOSQUITTO_FILE: &str = "\
alice:$7$101$AkFPzHBO7WYNKzSl$N2rUDOS85Haxw1PyS12GIEcDe8pn69hSuvy/bGKgYfT1yf1pvJ5pzNYJHNdibKTeKr4ASfYcw9Tv+PW6+aYpOA==
bob:$7$101$ubpL6WuuvIlEIWdD$+zg0bH39e5hqTOXdwGYBu6NABx3CH/Ng2VEyD6VReqC0hz8jSKh0c9xyYYtJaJ7a4Q2sXicbfOx6un+lBXfrFQ==
erin:$6$GBuzFGjpm2xG6i4b$qaI54Tp6SULhhkN4l/t0F+oWnSsL+dXLE371wKosz1EL2iGACruusrXx8LVTslpdcZSjSY/+fColRVSOx4KnHA==
";

    #[test]
    fn reads_pbkdf2_hashes_of_mosquitto_passwd() {
        let file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert_eq!(file.len(), 3);
        assert!(file.verify("alice", b"secret"));
        assert!(file.verify("bob", b"p:w d"));
        assert!(!file.verify("alice", b"Secret"));
        assert!(!file.verify("alice", b"p:w d"));
        assert!(!file.verify("carol", b"secret"));
    }

    #[test]
    fn reads_salted_sha512_hashes() {
        let file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert!(file.verify("erin", b"hunter2"));
        assert!(!file.verify("erin", b"hunter3"));
        assert_eq!(
            file.users.get("erin").and_then(PasswordHash::iterations),
            None
        );
        // SHA-512("secret" ‖ salt) for the 12-byte salt "saltsaltsalt".
        let salt = b"saltsaltsalt";
        let digest = Sha512::new()
            .chain_update(b"secret")
            .chain_update(salt)
            .finalize();
        let line = format!(
            "dave:$6${}${}\n",
            STANDARD.encode(salt),
            STANDARD.encode(digest)
        );
        let file = PasswordFile::parse(&line).unwrap();
        assert!(file.verify("dave", b"secret"));
        assert!(!file.verify("dave", b"secrets"));
        // And it is written back as it was read.
        assert_eq!(file.to_string(), line);
    }

    #[test]
    fn new_hashes_are_pbkdf2_with_101_iterations_and_fresh_salt() {
        let a = PasswordHash::new(b"pw").unwrap();
        let b = PasswordHash::new(b"pw").unwrap();
        assert_eq!(a.iterations(), Some(101));
        assert!(a.to_string().starts_with("$7$101$"));
        assert_ne!(a, b, "two hashes of one password differ by their salt");
        assert!(a.verify(b"pw") && b.verify(b"pw"));
        assert!(!a.verify(b"pW"));
        let again: PasswordHash = a.to_string().parse().unwrap();
        assert_eq!(again, a);
        let slow = PasswordHash::with_iterations(b"pw", 1000).unwrap();
        assert!(slow.to_string().starts_with("$7$1000$") && slow.verify(b"pw"));
        assert!(PasswordHash::with_iterations(b"pw", 0).is_err());
    }

    #[test]
    fn written_files_read_back() {
        let mut file = PasswordFile::new();
        file.set_password("zed", b"z").unwrap();
        file.set_password("amy", b"a").unwrap();
        let text = file.to_string();
        assert!(text.starts_with("amy:$7$101$"), "{text}");
        let back = PasswordFile::parse(&text).unwrap();
        assert_eq!(back.usernames().collect::<Vec<_>>(), ["amy", "zed"]);
        assert!(back.verify("amy", b"a") && back.verify("zed", b"z"));
        assert!(file.remove("amy") && !file.remove("amy"));
        for bad in ["", "a:b", "a\nb", " a", "#a"] {
            assert!(file.set_password(bad, b"x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_names_that_could_not_be_read_back_are_refused() {
        let long = "u".repeat(PasswordFile::MAX_USERNAME_LEN + 1);
        let cases = [
            ("", "is empty"),
            ("a:b", "holds `:`"),
            ("a\nb", "control character"),
            ("a\tb", "control character"),
            ("a\u{7f}", "control character"),
            ("a\u{85}", "control character"),
            (" a", "blanks around it"),
            ("a\u{a0}", "blanks around it"),
            ("#a", "starts with `#`"),
            (long.as_str(), "longer than 65535 bytes"),
        ];
        for (username, needle) in cases {
            let error = PasswordFile::check_username(username).unwrap_err();
            let text = error.to_string();
            assert!(text.contains(needle), "{username:?}: {text}");
            assert!(text.len() < 150, "{text}");
        }
        let longest = "u".repeat(PasswordFile::MAX_USERNAME_LEN);
        for good in ["alice", "a b", "a#", "ünïcode", "$SYS", longest.as_str()] {
            assert!(PasswordFile::check_username(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn password_file_errors_name_the_line() {
        let cases = [
            ("alice\n", 1, "username:hash"),
            ("# c\n\n:$6$AAAA$AAAA\n", 3, "empty user name"),
            ("a:plain\n", 1, "plain-text"),
            ("a:$5$x$y\n", 1, "unknown hash type"),
            ("a:$7$0$AAAA$AAAA\n", 1, "iteration"),
            ("a:$7$x$AAAA$AAAA\n", 1, "iteration"),
            ("a:$7$101$!!$AAAA\n", 1, "salt"),
            ("a:$7$101$AAAA$AAAA\n", 1, "64 bytes"),
            ("a:$7$101$AAAA\n", 1, "malformed"),
        ];
        for (text, line, needle) in cases {
            match PasswordFile::parse(text) {
                Err(error @ AuthFileError::Syntax { line: l, .. }) => {
                    assert_eq!(l, line, "{text:?}: {error}");
                    assert!(error.to_string().contains(needle), "{text:?}: {error}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let twice = format!(
            "{MOSQUITTO_FILE}alice:{}\n",
            PasswordHash::new(b"x").unwrap()
        );
        let error = PasswordFile::parse(&twice).unwrap_err();
        assert!(error.to_string().starts_with("line 4: "), "{error}");
    }

    #[test]
    fn bad_input_never_panics() {
        for text in [
            "$",
            ":",
            "a:$",
            "a:$7$",
            "a:$7$$$",
            "a:$7$4294967296$A$A",
            "a:$6$$",
            "a:$$$$$$",
            "\u{0}:\u{0}",
            "a:$7$1$=$=",
            "a:$6$A===$A",
        ] {
            let _ = PasswordFile::parse(text);
            let _ = text.parse::<PasswordHash>();
            let _ = AclFile::parse(text);
        }
        for text in [
            "topic",
            "topic read",
            "pattern",
            "user",
            "user\t",
            "topic read a/#/b",
        ] {
            assert!(AclFile::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let error = PasswordFile::load("/nonexistent/passwd").unwrap_err();
        assert!(matches!(error, AuthFileError::Io { .. }));
        assert!(error.to_string().contains("/nonexistent/passwd"), "{error}");
        let dir = std::env::temp_dir().join(format!("mqtt-auth-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acl");
        std::fs::write(&path, "topic a\nbogus line\n").unwrap();
        let error = AclFile::load(&path).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            error.to_string(),
            format!(
                "{}: line 2: unknown keyword `bogus` (expected user, topic or pattern)",
                path.display()
            )
        );
    }

    #[test]
    fn users_with_the_right_password_get_in() {
        let mut file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert_eq!(
            file.connect(&connect(Some("alice"), Some(b"secret"))),
            AuthDecision::Accept
        );
        for (username, password) in [
            (Some("alice"), Some(&b"wrong"[..])),
            (Some("alice"), None),
            (Some("nobody"), Some(&b"secret"[..])),
        ] {
            assert_eq!(
                file.connect(&connect(username, password)),
                AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword),
                "{username:?}"
            );
        }
    }

    #[test]
    fn anonymous_clients_only_when_allowed() {
        let file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert_eq!(
            file.clone().connect(&connect(None, None)),
            AuthDecision::Refuse(ReasonCode::NotAuthorized)
        );
        let mut open = file.allow_anonymous(true);
        assert_eq!(open.connect(&connect(None, None)), AuthDecision::Accept);
        // Allowing anonymous clients does not let a wrong password through.
        assert_eq!(
            open.connect(&connect(Some("alice"), Some(b"x"))),
            AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
        );
    }

    #[test]
    fn filter_within_filter() {
        let within = [
            ("a/#", "a/#"),
            ("a/#", "a"),
            ("a/#", "a/b"),
            ("a/#", "a/+"),
            ("a/#", "a/+/c/#"),
            ("a/+", "a/b"),
            ("a/+", "a/+"),
            ("a/+/c", "a/b/c"),
            ("+/+", "a/+"),
            ("#", "#"),
            ("#", "a/b/#"),
            ("+", "+"),
            ("a/b", "a/b"),
            ("/+", "/x"),
            ("$SYS/#", "$SYS/+/x"),
        ];
        for (allowed, filter) in within {
            assert!(filter_covers(allowed, filter), "{filter} within {allowed}");
        }
        let not_within = [
            ("a/+", "a/#"),
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("a/b", "a/+"),
            ("a/b", "a/b/c"),
            ("a/b", "a"),
            ("a/b/#", "a/#"),
            ("a/b/#", "a"),
            ("+", "#"),
            ("+", "a/b"),
            ("a/+/c", "a/b/#"),
            ("#", "$SYS/#"),
            ("+/x", "$SYS/x"),
            ("b/#", "a/#"),
        ];
        for (allowed, filter) in not_within {
            assert!(
                !filter_covers(allowed, filter),
                "{filter} not within {allowed}"
            );
        }
    }

    const ACL: &str = "\
# anonymous clients
topic read public/#
topic write   public/in

user alice
topic readwrite home/#
topic write alerts
topic read sensors/+/temp

user bob
topic home/bob

pattern write devices/%c/status
pattern read users/%u/#
";

    #[test]
    fn topic_rules_grant_write_to_publish() {
        let acl = AclFile::parse(ACL).unwrap();
        let alice = client("c", Some("alice"));
        assert!(acl.may_publish(alice, "home/kitchen/light"));
        assert!(acl.may_publish(alice, "home"));
        assert!(acl.may_publish(alice, "alerts"));
        assert!(!acl.may_publish(alice, "alerts/x"));
        assert!(!acl.may_publish(alice, "sensors/a/temp"), "read only");
        assert!(
            !acl.may_publish(alice, "public/in"),
            "anonymous rules are not alice's"
        );
        let bob = client("c", Some("bob"));
        assert!(
            acl.may_publish(bob, "home/bob"),
            "no access word: readwrite"
        );
        assert!(acl.may_subscribe(bob, "home/bob"));
        assert!(!acl.may_publish(bob, "home/alice"));
    }

    #[test]
    fn topic_rules_grant_read_to_subscribe() {
        let acl = AclFile::parse(ACL).unwrap();
        let alice = client("c", Some("alice"));
        assert!(acl.may_subscribe(alice, "home/#"));
        assert!(acl.may_subscribe(alice, "home/+/light"));
        assert!(acl.may_subscribe(alice, "sensors/+/temp"));
        assert!(acl.may_subscribe(alice, "sensors/x/temp"));
        assert!(!acl.may_subscribe(alice, "sensors/#"));
        assert!(!acl.may_subscribe(alice, "#"));
        assert!(!acl.may_subscribe(alice, "alerts"), "write only");
    }

    #[test]
    fn rules_before_any_user_are_for_anonymous_clients() {
        let acl = AclFile::parse(ACL).unwrap();
        let anonymous = client("c", None);
        assert!(acl.may_subscribe(anonymous, "public/news"));
        assert!(acl.may_publish(anonymous, "public/in"));
        assert!(!acl.may_publish(anonymous, "public/news"));
        assert!(!acl.may_subscribe(anonymous, "home/#"));
        // A user the file does not name gets only the patterns.
        let carol = client("c", Some("carol"));
        assert!(!acl.may_subscribe(carol, "public/news"));
        assert!(acl.may_subscribe(carol, "users/carol/inbox"));
    }

    #[test]
    fn patterns_substitute_client_id_and_username() {
        let acl = AclFile::parse(ACL).unwrap();
        let alice = client("sensor-7", Some("alice"));
        assert!(acl.may_publish(alice, "devices/sensor-7/status"));
        assert!(!acl.may_publish(alice, "devices/sensor-8/status"));
        assert!(acl.may_subscribe(alice, "users/alice/#"));
        assert!(!acl.may_subscribe(alice, "users/bob/#"));
        // An anonymous client has no %u: the pattern grants it nothing; %c still works.
        let anonymous = client("sensor-7", None);
        assert!(!acl.may_subscribe(anonymous, "users/%u/#"));
        assert!(!acl.may_subscribe(anonymous, "users/+/#"));
        assert!(acl.may_publish(anonymous, "devices/sensor-7/status"));
    }

    #[test]
    fn wildcards_in_substituted_values_grant_nothing() {
        let acl = AclFile::parse("pattern readwrite users/%u/#\npattern devices/%c").unwrap();
        let sneaky = client("#", Some("+"));
        assert!(!acl.may_subscribe(sneaky, "users/+/#"));
        assert!(!acl.may_publish(sneaky, "users/x/y"));
        assert!(!acl.may_subscribe(sneaky, "devices/#"));
        assert!(!acl.may_publish(sneaky, "devices/x"));
    }

    #[test]
    fn shared_subscriptions_are_checked_on_their_filter() {
        let acl = AclFile::parse(ACL).unwrap();
        let alice = client("c", Some("alice"));
        assert!(acl.may_subscribe(alice, "$share/g/home/#"));
        assert!(acl.may_subscribe(alice, "$share/g/sensors/x/temp"));
        assert!(!acl.may_subscribe(alice, "$share/g/sensors/#"));
        assert!(
            !acl.may_subscribe(alice, "$share/home/#"),
            "group `home`, filter `#`"
        );
        assert!(!acl.may_subscribe(alice, "$share/g"));
        assert!(AclFile::parse("topic $share/g/a").is_err());
    }

    #[test]
    fn dollar_topics_need_rules_naming_them() {
        let acl = AclFile::parse("topic #\ntopic read $SYS/broker/#").unwrap();
        let anonymous = client("c", None);
        assert!(acl.may_publish(anonymous, "a/b"));
        assert!(!acl.may_publish(anonymous, "$SYS/x"));
        assert!(!acl.may_subscribe(anonymous, "$SYS/#"));
        assert!(acl.may_subscribe(anonymous, "$SYS/broker/+"));
    }

    #[test]
    fn empty_acl_refuses_everything() {
        let acl = AclFile::new();
        for who in [client("c", None), client("c", Some("u"))] {
            assert!(!acl.may_publish(who, "a"));
            assert!(!acl.may_subscribe(who, "a"));
        }
    }

    /// The case of paho's interoperability tests (allow everything, deny one topic), and the
    /// examples of mosquitto's `aclfile.example` with a deny rule added.
    #[test]
    fn deny_rules_win_over_grants_as_in_mosquitto() {
        let acl = AclFile::parse("topic readwrite #\ntopic deny test/nosubscribe\n").unwrap();
        let anonymous = client("c", None);
        assert!(acl.may_subscribe(anonymous, "#"));
        assert!(
            acl.may_subscribe(anonymous, "test/+"),
            "mosquitto matches the filter literally"
        );
        assert!(!acl.may_subscribe(anonymous, "test/nosubscribe"));
        assert!(!acl.may_publish(anonymous, "test/nosubscribe"));
        assert!(acl.may_publish(anonymous, "test/other"));
        assert!(
            !acl.may_receive(anonymous, "test/nosubscribe"),
            "through `#`"
        );
        assert!(acl.may_receive(anonymous, "test/other"));
        assert!(Authorizer::checks_delivery(&acl));

        let acl = AclFile::parse(
            "topic read $SYS/#\n\nuser roger\ntopic foo/bar\ntopic deny foo/secret\n\n\
             pattern write $SYS/broker/connection/%c/state\npattern deny %u/private/#\n",
        )
        .unwrap();
        let roger = client("r1", Some("roger"));
        assert!(acl.may_publish(roger, "foo/bar"));
        assert!(!acl.may_publish(roger, "foo/secret"));
        assert!(acl.may_publish(roger, "$SYS/broker/connection/r1/state"));
        assert!(!acl.may_subscribe(roger, "roger/private/#"));
        assert!(!acl.may_receive(roger, "roger/private/x"));
        // Rules of other users, and patterns of other names, do not apply.
        let anonymous = client("c", None);
        assert!(acl.may_subscribe(anonymous, "$SYS/#"));
        assert!(acl.may_receive(anonymous, "foo/secret"));
        let plain = AclFile::parse("topic readwrite #\n").unwrap();
        assert!(
            !Authorizer::checks_delivery(&plain),
            "no deny rule: no cost per delivery"
        );
    }

    #[test]
    fn acl_errors_name_the_line() {
        let cases = [
            (
                "user alice\ntopic read\n",
                2,
                "missing topic filter after `read`",
            ),
            ("topic\n", 1, "missing topic filter"),
            ("user\n", 1, "without a user name"),
            ("\n\ntopic deny\n", 3, "missing topic filter after `deny`"),
            ("topic read a/#/b\n", 1, "wildcard"),
            ("pattern write a+/%c\n", 1, "wildcard"),
            ("topics a\n", 1, "unknown keyword `topics`"),
        ];
        for (text, line, needle) in cases {
            match AclFile::parse(text) {
                Err(error @ AuthFileError::Syntax { line: l, .. }) => {
                    assert_eq!(l, line, "{text:?}: {error}");
                    assert!(error.to_string().contains(needle), "{text:?}: {error}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn user_names_and_filters_may_hold_spaces() {
        let acl = AclFile::parse("user John Smith\ntopic read  my topic/#  \r\n").unwrap();
        let john = client("c", Some("John Smith"));
        assert!(acl.may_subscribe(john, "my topic/x"));
        assert!(!acl.may_subscribe(client("c", Some("John")), "my topic/x"));
    }
}
