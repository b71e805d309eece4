//! What the monitor shows, without a terminal: received messages, the topic tree, pause, format,
//! scrolling and the focused pane.
//!
//! Methods come in three groups: getters, `handle_*` input (messages, commands, the size of the
//! panes) and the rows to draw. Time is an argument, never read from a clock.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::payload::Format;
use super::topics::{TopicRow, TopicTree};

/// How many messages the list keeps; older ones make room for new ones.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

/// A received message, as the list keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// When it arrived (wall clock, for display).
    pub(crate) at: SystemTime,
    /// Its topic.
    pub(crate) topic: String,
    /// The QoS it was delivered at (0, 1 or 2).
    pub(crate) qos: u8,
    /// The retain flag.
    pub(crate) retain: bool,
    /// The payload size in bytes.
    pub(crate) size: usize,
    /// The first bytes of the payload, enough for a preview.
    pub(crate) prefix: Bytes,
    /// The 5.0 properties present, as (name, value) for display.
    pub(crate) properties: Vec<(&'static str, String)>,
}

/// The two scrollable panes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Pane {
    /// The message list.
    #[default]
    Messages,
    /// The topic tree.
    Topics,
}

/// A scroll movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scroll {
    /// One row towards the top.
    Up,
    /// One row towards the bottom.
    Down,
    /// One page towards the top.
    PageUp,
    /// One page towards the bottom.
    PageDown,
    /// The first row (the newest message).
    Home,
    /// The last row (the oldest message).
    End,
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Leave the monitor.
    Quit,
    /// Freeze or unfreeze the view.
    TogglePause,
    /// The next payload format.
    CycleFormat,
    /// Focus the other pane.
    SwitchPane,
    /// Show or hide the selected message in full.
    ToggleDetails,
    /// Hide the message details.
    CloseDetails,
    /// Scroll the focused pane.
    Scroll(Scroll),
}

/// A selected row and the first row shown, in a pane with `page` rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The selected row.
    pub(crate) selected: usize,
    /// The first row on screen.
    pub(crate) offset: usize,
}

impl Cursor {
    fn scroll(&mut self, scroll: Scroll, rows: usize, page: usize) {
        let page = page.max(1);
        self.selected = match scroll {
            Scroll::Up => self.selected.saturating_sub(1),
            Scroll::Down => self.selected.saturating_add(1),
            Scroll::PageUp => self.selected.saturating_sub(page),
            Scroll::PageDown => self.selected.saturating_add(page),
            Scroll::Home => 0,
            Scroll::End => rows.saturating_sub(1),
        };
        self.clamp(rows, page);
    }

    /// Rows were added above the selection: keep the same row selected and in the same place.
    fn shift(&mut self, added: usize, rows: usize, page: usize) {
        self.selected = self.selected.saturating_add(added);
        self.offset = self.offset.saturating_add(added);
        self.clamp(rows, page);
    }

    fn clamp(&mut self, rows: usize, page: usize) {
        let page = page.max(1);
        self.selected = self.selected.min(rows.saturating_sub(1));
        self.offset = self
            .offset
            .min(self.selected)
            .max((self.selected + 1).saturating_sub(page));
    }
}

/// The view as it was when the user paused.
#[derive(Debug, Clone)]
struct Frozen {
    messages: VecDeque<Entry>,
    topics: TopicTree,
    at: Instant,
    received: u64,
}

/// The monitor's state.
#[derive(Debug)]
pub(crate) struct Monitor {
    /// Where the messages come from (broker and filters), for the user.
    source: String,
    capacity: usize,
    /// Oldest first.
    messages: VecDeque<Entry>,
    topics: TopicTree,
    received: u64,
    frozen: Option<Frozen>,
    format: Format,
    focus: Pane,
    details: bool,
    cursors: [Cursor; 2],
    pages: [usize; 2],
}

impl Monitor {
    /// An empty monitor keeping at most `capacity` messages; rates count from `now`.
    pub(crate) fn new(now: Instant, capacity: usize) -> Self {
        Self {
            source: String::new(),
            capacity: capacity.max(1),
            messages: VecDeque::new(),
            topics: TopicTree::new(now),
            received: 0,
            frozen: None,
            format: Format::default(),
            focus: Pane::default(),
            details: false,
            cursors: [Cursor::default(); 2],
            pages: [1; 2],
        }
    }

    /// Says where the messages come from (broker and filters).
    pub(crate) fn with_source(mut self, source: String) -> Self {
        self.source = source;
        self
    }

    // Getters.

    /// Where the messages come from.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Messages received since the start.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Whether the view is frozen.
    pub(crate) fn is_paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// Messages received since the view was frozen (0 when it is not).
    pub(crate) fn received_while_paused(&self) -> u64 {
        self.frozen
            .as_ref()
            .map_or(0, |frozen| self.received - frozen.received)
    }

    /// The payload format.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// The focused pane.
    pub(crate) fn focus(&self) -> Pane {
        self.focus
    }

    /// Whether the selected message is shown in full (in place of the topic tree).
    pub(crate) fn is_showing_details(&self) -> bool {
        self.details
    }

    /// The selected message, if the list is not empty.
    pub(crate) fn selected_message(&self) -> Option<&Entry> {
        let selected = self.cursor(Pane::Messages).selected;
        self.message_rows(selected, 1).next()
    }

    /// The selection and scroll position of a pane.
    pub(crate) fn cursor(&self, pane: Pane) -> Cursor {
        self.cursors[pane as usize]
    }

    /// How many messages the list shows (live or frozen).
    pub(crate) fn message_count(&self) -> usize {
        self.shown_messages().len()
    }

    /// The shown topic tree and the instant its rates are computed at: `now`, or the moment of
    /// the pause.
    pub(crate) fn topic_tree(&self, now: Instant) -> (&TopicTree, Instant) {
        match &self.frozen {
            Some(frozen) => (&frozen.topics, frozen.at),
            None => (&self.topics, now),
        }
    }

    /// The messages in rows `start..start + len`, newest first.
    pub(crate) fn message_rows(&self, start: usize, len: usize) -> impl Iterator<Item = &Entry> {
        self.shown_messages().iter().rev().skip(start).take(len)
    }

    /// The topic rows `start..start + len` at `now`.
    pub(crate) fn topic_rows(
        &self,
        now: Instant,
        start: usize,
        len: usize,
    ) -> impl Iterator<Item = TopicRow<'_>> {
        let (tree, at) = self.topic_tree(now);
        tree.rows(at).skip(start).take(len)
    }

    fn shown_messages(&self) -> &VecDeque<Entry> {
        match &self.frozen {
            Some(frozen) => &frozen.messages,
            None => &self.messages,
        }
    }

    fn rows(&self, pane: Pane) -> usize {
        match pane {
            Pane::Messages => self.message_count(),
            Pane::Topics => match &self.frozen {
                Some(frozen) => frozen.topics.row_count(),
                None => self.topics.row_count(),
            },
        }
    }

    // Input.

    /// A message arrived at `now`. While paused it is counted and kept, but not shown.
    pub(crate) fn handle_message(&mut self, now: Instant, entry: Entry) {
        self.received += 1;
        self.topics.record(now, &entry.topic);
        if self.messages.len() == self.capacity {
            self.messages.pop_front();
        }
        self.messages.push_back(entry);
        if self.frozen.is_none() {
            self.follow_new_messages(1);
        }
    }

    /// Applies a command; returns `false` when the monitor should end.
    pub(crate) fn handle_command(&mut self, now: Instant, command: Command) -> bool {
        match command {
            Command::Quit => return false,
            Command::TogglePause => self.toggle_pause(now),
            Command::CycleFormat => self.format = super::payload::next(self.format),
            Command::SwitchPane => {
                self.focus = match self.focus {
                    Pane::Messages => Pane::Topics,
                    Pane::Topics => Pane::Messages,
                };
                // The details stand in for the topic tree: showing the tree hides them.
                if self.focus == Pane::Topics {
                    self.details = false;
                }
            }
            Command::ToggleDetails => {
                self.details = !self.details;
                self.focus = Pane::Messages;
            }
            Command::CloseDetails => self.details = false,
            Command::Scroll(scroll) => {
                let pane = self.focus;
                let rows = self.rows(pane);
                let page = self.pages[pane as usize];
                self.cursors[pane as usize].scroll(scroll, rows, page);
            }
        }
        true
    }

    /// The panes now show this many rows each.
    pub(crate) fn handle_resize(&mut self, messages: usize, topics: usize) {
        self.pages = [messages, topics];
        for pane in [Pane::Messages, Pane::Topics] {
            let rows = self.rows(pane);
            self.cursors[pane as usize].clamp(rows, self.pages[pane as usize]);
        }
    }

    fn toggle_pause(&mut self, now: Instant) {
        match self.frozen.take() {
            None => {
                self.frozen = Some(Frozen {
                    messages: self.messages.clone(),
                    topics: self.topics.clone(),
                    at: now,
                    received: self.received,
                });
            }
            Some(frozen) => {
                let added = self.received - frozen.received;
                self.follow_new_messages(usize::try_from(added).unwrap_or(usize::MAX));
                let rows = self.rows(Pane::Topics);
                self.cursors[Pane::Topics as usize].clamp(rows, self.pages[Pane::Topics as usize]);
            }
        }
    }

    /// `added` messages came in above the list: the newest row stays selected if it was (the
    /// list follows new messages), else the selected message stays where it is.
    fn follow_new_messages(&mut self, added: usize) {
        let rows = self.messages.len();
        let page = self.pages[Pane::Messages as usize];
        let cursor = &mut self.cursors[Pane::Messages as usize];
        if cursor.selected == 0 {
            cursor.clamp(rows, page);
        } else {
            cursor.shift(added, rows, page);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(topic: &str, payload: &'static [u8]) -> Entry {
        Entry {
            at: SystemTime::UNIX_EPOCH,
            topic: topic.to_owned(),
            qos: 1,
            retain: false,
            size: payload.len(),
            prefix: Bytes::from_static(payload),
            properties: Vec::new(),
        }
    }

    fn topics_shown(monitor: &Monitor, now: Instant) -> Vec<String> {
        monitor
            .message_rows(0, usize::MAX)
            .map(|e| e.topic.clone())
            .chain(std::iter::once("|".to_owned()))
            .chain(
                monitor
                    .topic_rows(now, 0, usize::MAX)
                    .map(|row| format!("{}={}", row.name, row.count)),
            )
            .collect()
    }

    #[test]
    fn messages_are_listed_newest_first_and_counted_per_topic() {
        let now = Instant::now();
        let mut monitor = Monitor::new(now, 10);
        monitor.handle_message(now, entry("a/b", b"1"));
        monitor.handle_message(now, entry("a/c", b"2"));
        monitor.handle_message(now, entry("a/b", b"3"));
        assert_eq!(
            topics_shown(&monitor, now),
            ["a/b", "a/c", "a/b", "|", "a=3", "b=2", "c=1"]
        );
        assert_eq!(monitor.received(), 3);
    }

    #[test]
    fn the_list_is_bounded_but_every_message_is_counted() {
        let now = Instant::now();
        let mut monitor = Monitor::new(now, 3);
        for _ in 0..5 {
            monitor.handle_message(now, entry("t", b""));
        }
        assert_eq!(monitor.message_count(), 3);
        assert_eq!(monitor.received(), 5);
        let counts: Vec<u64> = monitor.topic_rows(now, 0, 10).map(|r| r.count).collect();
        assert_eq!(counts, [5]);
    }

    #[test]
    fn pause_freezes_the_view_while_messages_are_still_counted() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut monitor = Monitor::new(t0, 10);
        monitor.handle_message(t0, entry("old", b""));
        assert!(monitor.handle_command(t0, Command::TogglePause));
        assert!(monitor.is_paused());
        monitor.handle_message(t1, entry("new", b""));
        monitor.handle_message(t1, entry("new", b""));
        assert_eq!(topics_shown(&monitor, t1), ["old", "|", "old=1"]);
        assert_eq!(monitor.received(), 3);
        assert_eq!(monitor.received_while_paused(), 2);

        monitor.handle_command(t1, Command::TogglePause);
        assert!(!monitor.is_paused());
        assert_eq!(monitor.received_while_paused(), 0);
        assert_eq!(
            topics_shown(&monitor, t1),
            ["new", "new", "old", "|", "new=2", "old=1"]
        );
    }

    #[test]
    fn format_cycles_and_quit_ends() {
        let now = Instant::now();
        let mut monitor = Monitor::new(now, 10);
        assert_eq!(monitor.format(), Format::Auto);
        monitor.handle_command(now, Command::CycleFormat);
        assert_eq!(monitor.format(), Format::Binary);
        monitor.handle_command(now, Command::CycleFormat);
        assert_eq!(monitor.format(), Format::Text);
        monitor.handle_command(now, Command::CycleFormat);
        assert_eq!(monitor.format(), Format::Auto);
        assert!(!monitor.handle_command(now, Command::Quit));
    }

    #[test]
    fn scrolling_keeps_the_selection_on_screen() {
        let now = Instant::now();
        let mut monitor = Monitor::new(now, 100);
        for _ in 0..50 {
            monitor.handle_message(now, entry("t", b""));
        }
        monitor.handle_resize(10, 5);
        let scroll = |monitor: &mut Monitor, scroll| {
            monitor.handle_command(now, Command::Scroll(scroll));
            monitor.cursor(Pane::Messages)
        };
        assert_eq!(scroll(&mut monitor, Scroll::Up), Cursor::default());
        assert_eq!(
            scroll(&mut monitor, Scroll::PageDown),
            Cursor {
                selected: 10,
                offset: 1
            }
        );
        assert_eq!(
            scroll(&mut monitor, Scroll::End),
            Cursor {
                selected: 49,
                offset: 40
            }
        );
        assert_eq!(
            scroll(&mut monitor, Scroll::PageUp),
            Cursor {
                selected: 39,
                offset: 39
            }
        );
        assert_eq!(scroll(&mut monitor, Scroll::Home), Cursor::default());
        // A smaller window pulls the selection back into view.
        scroll(&mut monitor, Scroll::End);
        monitor.handle_resize(3, 5);
        assert_eq!(
            monitor.cursor(Pane::Messages),
            Cursor {
                selected: 49,
                offset: 47
            }
        );
    }

    #[test]
    fn new_messages_keep_a_scrolled_selection_in_place_and_the_top_follows() {
        let now = Instant::now();
        let mut monitor = Monitor::new(now, 100);
        monitor.handle_resize(10, 5);
        for _ in 0..20 {
            monitor.handle_message(now, entry("t", b""));
        }
        // At the top the list follows: the newest stays selected.
        assert_eq!(monitor.cursor(Pane::Messages), Cursor::default());
        monitor.handle_command(now, Command::Scroll(Scroll::Down));
        monitor.handle_command(now, Command::Scroll(Scroll::Down));
        monitor.handle_message(now, entry("t", b""));
        assert_eq!(
            monitor.cursor(Pane::Messages),
            Cursor {
                selected: 3,
                offset: 1
            }
        );
        // After a pause, the messages that came in meanwhile are added above as well.
        monitor.handle_command(now, Command::TogglePause);
        monitor.handle_message(now, entry("t", b""));
        monitor.handle_message(now, entry("t", b""));
        assert_eq!(monitor.cursor(Pane::Messages).selected, 3);
        monitor.handle_command(now, Command::TogglePause);
        assert_eq!(
            monitor.cursor(Pane::Messages),
            Cursor {
                selected: 5,
                offset: 3
            }
        );
    }

    #[test]
    fn tab_switches_the_scrolled_pane() {
        let now = Instant::now();
        let mut monitor = Monitor::new(now, 100);
        monitor.handle_resize(10, 5);
        for topic in ["a", "b", "c"] {
            monitor.handle_message(now, entry(topic, b""));
        }
        monitor.handle_command(now, Command::SwitchPane);
        assert_eq!(monitor.focus(), Pane::Topics);
        monitor.handle_command(now, Command::Scroll(Scroll::End));
        assert_eq!(monitor.cursor(Pane::Topics).selected, 2);
        assert_eq!(monitor.cursor(Pane::Messages).selected, 0);
        monitor.handle_command(now, Command::SwitchPane);
        assert_eq!(monitor.focus(), Pane::Messages);
    }

    #[test]
    fn details_follow_the_selection_and_give_way_to_the_tree() {
        let now = Instant::now();
        let mut monitor = Monitor::new(now, 100);
        monitor.handle_resize(10, 5);
        assert_eq!(monitor.selected_message(), None);
        monitor.handle_message(now, entry("first", b""));
        monitor.handle_message(now, entry("second", b""));
        monitor.handle_command(now, Command::ToggleDetails);
        assert!(monitor.is_showing_details());
        let selected = |monitor: &Monitor| monitor.selected_message().map(|e| e.topic.clone());
        assert_eq!(selected(&monitor).as_deref(), Some("second"));
        monitor.handle_command(now, Command::Scroll(Scroll::Down));
        assert_eq!(selected(&monitor).as_deref(), Some("first"));
        monitor.handle_command(now, Command::CloseDetails);
        assert!(!monitor.is_showing_details());
        monitor.handle_command(now, Command::ToggleDetails);
        monitor.handle_command(now, Command::SwitchPane);
        assert!(!monitor.is_showing_details());
        assert_eq!(monitor.focus(), Pane::Topics);
        // Enter from the tree shows the selected message and focuses the list.
        monitor.handle_command(now, Command::ToggleDetails);
        assert!(monitor.is_showing_details());
        assert_eq!(monitor.focus(), Pane::Messages);
    }

    #[test]
    fn scrolling_an_empty_pane_is_harmless() {
        let now = Instant::now();
        let mut monitor = Monitor::new(now, 10);
        monitor.handle_resize(0, 0);
        for scroll in [Scroll::Down, Scroll::End, Scroll::PageDown, Scroll::Up] {
            monitor.handle_command(now, Command::Scroll(scroll));
            assert_eq!(monitor.cursor(Pane::Messages), Cursor::default());
        }
    }
}
