//! Tractor job scripts (Tcl syntax): the writer from a publish [`Graph`], Tcl
//! quoting, a Tcl list splitter and a strict parser/validator.
//!
//! Every value goes through [`quote_word`], which returns a word Tcl reads back as
//! exactly the input (spaces, braces balanced or not, backslashes, `$`, `[`,
//! newlines, unicode). [`validate`] parses a script as Tcl (nested `-subtasks` and
//! `-cmds` too), knows the job operators, checks that every `Instance` names an
//! existing task `-id` (or title) and that ids are unique; the bridge validates
//! every script before it spools it, and the test engine uses the same parser.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::TractorSettings;
use crate::task::{Graph, TaskNode};

/// Why a script (or a list) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// Tcl syntax: unbalanced braces or quotes, extra characters after a close brace …
    #[error("Tcl syntax error at byte {at}: {message}")]
    Syntax {
        /// Byte offset in the parsed text.
        at: usize,
        /// What is wrong.
        message: String,
    },
    /// An operator the job format does not have.
    #[error("unknown operator {0:?}")]
    UnknownOperator(String),
    /// An operator in a place it cannot be, or missing arguments.
    #[error("malformed {operator}: {message}")]
    Malformed {
        /// The operator.
        operator: String,
        /// What is wrong.
        message: String,
    },
    /// An `Instance` names no task of the job.
    #[error("Instance {0:?} refers to no task -id or title of the job")]
    UnknownInstance(String),
    /// Two tasks share an `-id`.
    #[error("duplicate task -id {0:?}")]
    DuplicateId(String),
}

// ---------------------------------------------------------------------------
// Quoting.
// ---------------------------------------------------------------------------

fn special(c: char) -> bool {
    matches!(c, '{' | '}' | '[' | ']' | '$' | '"' | ';' | '\\')
}

/// Whether `w` can be written inside braces: braces balance (never closing more
/// than opened; `\{` and `\}` are not counted), no trailing odd backslash, no
/// backslash-newline.
fn brace_safe(w: &str) -> bool {
    let b = w.as_bytes();
    let mut depth: i64 = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if i + 1 >= b.len() || b[i + 1] == b'\n' {
                    return false;
                }
                i += 2;
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    depth == 0
}

/// One word as a Tcl list element / command word that Tcl reads back as `w`.
pub fn quote_word(w: &str) -> String {
    if w.is_empty() {
        return "{}".into();
    }
    let plain = !w.starts_with('#')
        && !w
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || special(c));
    if plain {
        return w.to_string();
    }
    if brace_safe(w) {
        return format!("{{{w}}}");
    }
    let mut out = String::with_capacity(w.len() + 8);
    for (i, c) in w.chars().enumerate() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '#' if i == 0 => out.push_str("\\#"),
            c if special(c) || c == ' ' => {
                out.push('\\');
                out.push(c);
            }
            c if (c.is_control() || c.is_whitespace()) && (c as u32) <= 0xFFFF => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// A list of words as one Tcl word (`{a {b c}}`).
pub fn quote_list<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| quote_word(s.as_ref())).collect();
    quote_word(&inner.join(" "))
}

// ---------------------------------------------------------------------------
// Parsing.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Script,
    List,
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    mode: Mode,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, mode: Mode) -> Self {
        Parser {
            s: text.as_bytes(),
            text,
            i: 0,
            mode,
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ScriptError> {
        Err(ScriptError::Syntax {
            at: self.i,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn is_word_sep(&self, b: u8) -> bool {
        match self.mode {
            Mode::Script => matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c),
            Mode::List => matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c),
        }
    }

    fn is_cmd_end(&self, b: u8) -> bool {
        self.mode == Mode::Script && matches!(b, b'\n' | b';')
    }

    /// Skips word separators (and backslash-newline in scripts).
    fn skip_seps(&mut self) {
        while let Some(b) = self.peek() {
            if self.is_word_sep(b) {
                self.i += 1;
            } else if b == b'\\' && self.s.get(self.i + 1) == Some(&b'\n') {
                self.i += 2;
            } else {
                break;
            }
        }
    }

    /// After a braced or quoted word: a separator, a command end or the end.
    fn after_word(&self, what: &str) -> Result<(), ScriptError> {
        match self.peek() {
            None => Ok(()),
            Some(b) if self.is_word_sep(b) || self.is_cmd_end(b) => Ok(()),
            Some(b'\\') if self.s.get(self.i + 1) == Some(&b'\n') => Ok(()),
            Some(_) => self.err(format!("extra characters after close-{what}")),
        }
    }

    fn braced(&mut self) -> Result<String, ScriptError> {
        let start = self.i;
        self.i += 1;
        let mut depth = 1usize;
        let mut out = String::new();
        let mut seg = self.i;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => {
                    if self.s.get(self.i + 1) == Some(&b'\n') {
                        out.push_str(&self.text[seg..self.i]);
                        self.i += 2;
                        while matches!(self.peek(), Some(b' ' | b'\t')) {
                            self.i += 1;
                        }
                        out.push(' ');
                        seg = self.i;
                        continue;
                    }
                    self.i += 2;
                    continue;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push_str(&self.text[seg..self.i]);
                        self.i += 1;
                        self.after_word("brace")?;
                        return Ok(out);
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
        self.i = start;
        self.err("missing close-brace")
    }

    /// Backslash substitution at `self.i` (on the backslash); appends to `out`.
    fn backslash(&mut self, out: &mut String) {
        self.i += 1;
        let Some(b) = self.peek() else {
            out.push('\\');
            return;
        };
        let simple = match b {
            b'a' => Some('\x07'),
            b'b' => Some('\x08'),
            b'f' => Some('\x0c'),
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            b'v' => Some('\x0b'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            self.i += 1;
            return;
        }
        let hex = |p: &mut Self, max: usize| -> Option<u32> {
            let st = p.i;
            while p.i < p.s.len() && p.i - st < max && p.s[p.i].is_ascii_hexdigit() {
                p.i += 1;
            }
            (p.i > st).then(|| u32::from_str_radix(&p.text[st..p.i], 16).unwrap_or(0))
        };
        match b {
            b'\n' => {
                self.i += 1;
                while matches!(self.peek(), Some(b' ' | b'\t')) {
                    self.i += 1;
                }
                out.push(' ');
            }
            b'x' | b'u' | b'U' => {
                self.i += 1;
                let max = match b {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                match hex(self, max) {
                    Some(v) => out.push(char::from_u32(v).unwrap_or('\u{fffd}')),
                    None => out.push(b as char),
                }
            }
            b'0'..=b'7' => {
                let st = self.i;
                while self.i < self.s.len()
                    && self.i - st < 3
                    && (b'0'..=b'7').contains(&self.s[self.i])
                {
                    self.i += 1;
                }
                let v = u32::from_str_radix(&self.text[st..self.i], 8).unwrap_or(0) & 0xff;
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            }
            _ => {
                // Any other character (possibly multi-byte) stands for itself.
                let c = self.text[self.i..].chars().next().unwrap_or('\\');
                out.push(c);
                self.i += c.len_utf8();
            }
        }
    }

    fn quoted(&mut self) -> Result<String, ScriptError> {
        let start = self.i;
        self.i += 1;
        let mut out = String::new();
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    self.i += 1;
                    self.after_word("quote")?;
                    return Ok(out);
                }
                b'\\' => self.backslash(&mut out),
                b'$' | b'[' if self.mode == Mode::Script => {
                    return self.err("substitution ($ or [) is not allowed in a job script");
                }
                _ => {
                    let c = self.text[self.i..].chars().next().unwrap_or(' ');
                    out.push(c);
                    self.i += c.len_utf8();
                }
            }
        }
        self.i = start;
        self.err("missing close-quote")
    }

    fn bare(&mut self) -> Result<String, ScriptError> {
        let mut out = String::new();
        while let Some(b) = self.peek() {
            if self.is_word_sep(b) || self.is_cmd_end(b) {
                break;
            }
            match b {
                b'\\' => {
                    if self.s.get(self.i + 1) == Some(&b'\n') {
                        break;
                    }
                    self.backslash(&mut out)
                }
                b'$' | b'[' if self.mode == Mode::Script => {
                    return self.err("substitution ($ or [) is not allowed in a job script");
                }
                _ => {
                    let c = self.text[self.i..].chars().next().unwrap_or(' ');
                    out.push(c);
                    self.i += c.len_utf8();
                }
            }
        }
        Ok(out)
    }

    fn word(&mut self) -> Result<String, ScriptError> {
        match self.peek() {
            Some(b'{') => self.braced(),
            Some(b'"') => self.quoted(),
            _ => self.bare(),
        }
    }

    /// Next command's words (script mode), `None` at the end.
    fn command(&mut self) -> Result<Option<Vec<String>>, ScriptError> {
        loop {
            // Skip blank space, empty commands and comments.
            self.skip_seps();
            match self.peek() {
                None => return Ok(None),
                Some(b'\n' | b';') => {
                    self.i += 1;
                }
                Some(b'#') => {
                    while let Some(b) = self.peek() {
                        if b == b'\\' {
                            self.i += 2;
                            continue;
                        }
                        if b == b'\n' {
                            break;
                        }
                        self.i += 1;
                    }
                }
                Some(_) => break,
            }
        }
        let mut words = Vec::new();
        loop {
            self.skip_seps();
            match self.peek() {
                None => break,
                Some(b) if self.is_cmd_end(b) => {
                    self.i += 1;
                    break;
                }
                Some(_) => words.push(self.word()?),
            }
        }
        Ok(Some(words))
    }
}

/// Splits a Tcl list into its elements, as Tcl's `split`-free list parsing does
/// (`lindex`, `foreach`): braces, quotes and backslashes as Tcl reads them.
pub fn split_list(s: &str) -> Result<Vec<String>, ScriptError> {
    let mut p = Parser::new(s, Mode::List);
    let mut out = Vec::new();
    loop {
        p.skip_seps();
        if p.peek().is_none() {
            return Ok(out);
        }
        out.push(p.word()?);
    }
}

/// Splits a Tcl script into commands (each a list of words after substitution).
/// Variable and command substitution are refused: job scripts never need them.
pub fn parse_commands(script: &str) -> Result<Vec<Vec<String>>, ScriptError> {
    let mut p = Parser::new(script, Mode::Script);
    let mut out = Vec::new();
    while let Some(c) = p.command()? {
        if !c.is_empty() {
            out.push(c);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The job model and its validation.
// ---------------------------------------------------------------------------

/// A parsed job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `-name value` options, without the dash.
    pub attrs: BTreeMap<String, String>,
    /// Top-level tasks (they run last).
    pub tasks: Vec<JobNode>,
}

/// A node in the task tree.
#[derive(Debug, Clone, PartialEq)]
pub enum JobNode {
    /// A task.
    Task(JobTask),
    /// A reference to a task written elsewhere (by `-id`, else title).
    Instance(String),
}

/// One task.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTask {
    /// Title.
    pub title: String,
    /// `-id`.
    pub id: Option<String>,
    /// Other options.
    pub attrs: BTreeMap<String, String>,
    /// Commands (`RemoteCmd`/`Cmd`).
    pub cmds: Vec<JobCmd>,
    /// Tasks that must be done first.
    pub subtasks: Vec<JobNode>,
}

/// One command.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCmd {
    /// `RemoteCmd` or `Cmd`.
    pub operator: String,
    /// The argv.
    pub argv: Vec<String>,
    /// Options.
    pub attrs: BTreeMap<String, String>,
}

impl Job {
    /// Every task, depth first (each written task once; Instances not followed).
    pub fn all_tasks(&self) -> Vec<&JobTask> {
        fn walk<'a>(nodes: &'a [JobNode], out: &mut Vec<&'a JobTask>) {
            for n in nodes {
                if let JobNode::Task(t) = n {
                    walk(&t.subtasks, out);
                    out.push(t);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.tasks, &mut out);
        out
    }

    /// The job title.
    pub fn title(&self) -> &str {
        self.attrs.get("title").map(String::as_str).unwrap_or("")
    }
}

const OPERATORS: [&str; 7] = [
    "Job",
    "Task",
    "RemoteCmd",
    "Cmd",
    "Instance",
    "Iterate",
    "Assign",
];

fn options(operator: &str, words: &[String]) -> Result<BTreeMap<String, String>, ScriptError> {
    if !words.len().is_multiple_of(2) {
        return Err(ScriptError::Malformed {
            operator: operator.into(),
            message: format!("option {:?} has no value", words[words.len() - 1]),
        });
    }
    let mut m = BTreeMap::new();
    for kv in words.chunks(2) {
        let Some(k) = kv[0].strip_prefix('-').filter(|k| !k.is_empty()) else {
            return Err(ScriptError::Malformed {
                operator: operator.into(),
                message: format!("expected an -option, found {:?}", kv[0]),
            });
        };
        m.insert(k.to_string(), kv[1].clone());
    }
    Ok(m)
}

fn check_operator(name: &str) -> Result<(), ScriptError> {
    if OPERATORS.contains(&name) {
        Ok(())
    } else {
        Err(ScriptError::UnknownOperator(name.into()))
    }
}

fn parse_nodes(body: &str) -> Result<Vec<JobNode>, ScriptError> {
    let mut out = Vec::new();
    for c in parse_commands(body)? {
        check_operator(&c[0])?;
        match c[0].as_str() {
            "Task" => {
                let Some(title) = c.get(1) else {
                    return Err(ScriptError::Malformed {
                        operator: "Task".into(),
                        message: "no title".into(),
                    });
                };
                let mut attrs = options("Task", &c[2..])?;
                let id = attrs.remove("id");
                let cmds = match attrs.remove("cmds") {
                    Some(b) => parse_cmds(&b)?,
                    None => vec![],
                };
                let subtasks = match attrs.remove("subtasks") {
                    Some(b) => parse_nodes(&b)?,
                    None => vec![],
                };
                out.push(JobNode::Task(JobTask {
                    title: title.clone(),
                    id,
                    attrs,
                    cmds,
                    subtasks,
                }));
            }
            "Instance" => {
                if c.len() != 2 {
                    return Err(ScriptError::Malformed {
                        operator: "Instance".into(),
                        message: "takes exactly one task id or title".into(),
                    });
                }
                out.push(JobNode::Instance(c[1].clone()));
            }
            other => {
                return Err(ScriptError::Malformed {
                    operator: other.into(),
                    message: "not allowed in -subtasks (Task or Instance only)".into(),
                })
            }
        }
    }
    Ok(out)
}

fn parse_cmds(body: &str) -> Result<Vec<JobCmd>, ScriptError> {
    let mut out = Vec::new();
    for c in parse_commands(body)? {
        check_operator(&c[0])?;
        if c[0] != "RemoteCmd" && c[0] != "Cmd" {
            return Err(ScriptError::Malformed {
                operator: c[0].clone(),
                message: "not allowed in -cmds (RemoteCmd or Cmd only)".into(),
            });
        }
        let Some(argv) = c.get(1) else {
            return Err(ScriptError::Malformed {
                operator: c[0].clone(),
                message: "no argv".into(),
            });
        };
        let argv = split_list(argv)?;
        if argv.is_empty() {
            return Err(ScriptError::Malformed {
                operator: c[0].clone(),
                message: "empty argv".into(),
            });
        }
        out.push(JobCmd {
            operator: c[0].clone(),
            argv,
            attrs: options(&c[0], &c[2..])?,
        });
    }
    Ok(out)
}

/// Parses and checks a job script: Tcl syntax, known operators in their places,
/// a `Job` with `-title` and `-subtasks`, unique task ids, every `Instance`
/// resolving to a task `-id` or title.
pub fn validate(script: &str) -> Result<Job, ScriptError> {
    let cmds = parse_commands(script)?;
    let mut job = None;
    for c in cmds {
        check_operator(&c[0])?;
        if c[0] != "Job" {
            return Err(ScriptError::Malformed {
                operator: c[0].clone(),
                message: "only Job is allowed at the top level".into(),
            });
        }
        if job.is_some() {
            return Err(ScriptError::Malformed {
                operator: "Job".into(),
                message: "more than one Job".into(),
            });
        }
        let mut attrs = options("Job", &c[1..])?;
        if !attrs.contains_key("title") {
            return Err(ScriptError::Malformed {
                operator: "Job".into(),
                message: "no -title".into(),
            });
        }
        let Some(body) = attrs.remove("subtasks") else {
            return Err(ScriptError::Malformed {
                operator: "Job".into(),
                message: "no -subtasks".into(),
            });
        };
        let tasks = parse_nodes(&body)?;
        job = Some(Job { attrs, tasks });
    }
    let Some(job) = job else {
        return Err(ScriptError::Malformed {
            operator: "Job".into(),
            message: "the script has no Job".into(),
        });
    };
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for t in job.all_tasks() {
        if let Some(id) = &t.id {
            if !ids.insert(id.clone()) {
                return Err(ScriptError::DuplicateId(id.clone()));
            }
        }
        titles.insert(t.title.clone());
    }
    fn check(
        nodes: &[JobNode],
        ids: &BTreeSet<String>,
        titles: &BTreeSet<String>,
    ) -> Result<(), ScriptError> {
        for n in nodes {
            match n {
                JobNode::Instance(r) if !ids.contains(r) && !titles.contains(r) => {
                    return Err(ScriptError::UnknownInstance(r.clone()))
                }
                JobNode::Task(t) => check(&t.subtasks, ids, titles)?,
                _ => {}
            }
        }
        Ok(())
    }
    check(&job.tasks, &ids, &titles)?;
    Ok(job)
}

// ---------------------------------------------------------------------------
// Writing.
// ---------------------------------------------------------------------------

/// A title with braces replaced by parentheses (engine parsers' backslash
/// handling inside titles is unverified; see the reference §2).
pub fn sanitize_title(s: &str) -> String {
    s.replace('{', "(").replace('}', ")")
}

/// The job title of a graph: `<prefix><shot> publish`.
pub fn job_title(graph: &Graph, cfg: &TractorSettings) -> String {
    sanitize_title(&format!("{}{} publish", cfg.title_prefix, graph.info.shot))
}

/// The argv of a task's proxy command.
pub fn proxy_argv(graph: &Graph, node: &TaskNode, cfg: &TractorSettings) -> Vec<String> {
    vec![
        cfg.bridge_binary.clone(),
        "await".into(),
        "--graph".into(),
        graph.id.0.clone(),
        "--task".into(),
        node.id.0.clone(),
    ]
}

/// The Tractor job mirroring `graph`: one Task per node (`-id` = iom task id)
/// whose command is the bridge's proxy; dependencies as `-subtasks` (a task runs
/// after its subtasks), a dependency shared by several tasks written once and
/// referenced by `Instance`.
pub fn job_script(graph: &Graph, cfg: &TractorSettings) -> String {
    let service = if graph.info.seq_type == "lib" {
        &cfg.lib_service
    } else {
        &cfg.service
    };
    let projects = if cfg.projects.is_empty() {
        vec![graph.info.project.clone()]
    } else {
        cfg.projects.clone()
    };
    let metadata = serde_json::json!({
        "graph_id": graph.id.0,
        "shot": graph.info.shot,
        "seq_type": graph.info.seq_type,
        "version": graph.info.version,
    })
    .to_string();
    let mut out = String::from("##AlfredToDo 3.0\n");
    out.push_str(&format!(
        "Job -title {} -comment {} -metadata {} -projects {} -tags {} -priority {} -service {} -envkey {} -serialsubtasks 0 -subtasks {{\n",
        quote_word(&job_title(graph, cfg)),
        quote_word(&format!("mirror of iom graph {}", graph.id)),
        quote_word(&metadata),
        quote_list(&projects),
        quote_list(&cfg.tags),
        quote_word(&format!("{:.1}", cfg.priority)),
        quote_word(service),
        quote_list(&cfg.envkey),
    ));
    let dependents: BTreeSet<&str> = graph
        .nodes
        .iter()
        .flat_map(|n| n.deps.iter().map(|d| d.0.as_str()))
        .collect();
    let mut written = BTreeSet::new();
    for n in graph
        .nodes
        .iter()
        .filter(|n| !dependents.contains(n.id.0.as_str()))
    {
        write_task(graph, n, cfg, 1, &mut written, &mut out);
    }
    out.push_str("}\n");
    out
}

fn write_task(
    graph: &Graph,
    n: &TaskNode,
    cfg: &TractorSettings,
    level: usize,
    written: &mut BTreeSet<String>,
    out: &mut String,
) {
    let ind = "  ".repeat(level);
    if !written.insert(n.id.0.clone()) {
        out.push_str(&format!("{ind}Instance {}\n", quote_word(&n.id.0)));
        return;
    }
    out.push_str(&format!(
        "{ind}Task {} -id {} -cmds {{\n{ind}  RemoteCmd {} -service {}\n{ind}}}",
        quote_word(&sanitize_title(&n.label)),
        quote_word(&n.id.0),
        quote_list(&proxy_argv(graph, n, cfg)),
        quote_word(&cfg.proxy_service),
    ));
    let deps: Vec<&TaskNode> = n.deps.iter().filter_map(|d| graph.node(d)).collect();
    if deps.is_empty() {
        out.push('\n');
        return;
    }
    out.push_str(" -subtasks {\n");
    for d in deps {
        write_task(graph, d, cfg, level + 1, written, out);
    }
    out.push_str(&format!("{ind}}}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        let v = [
            ("plain", "plain"),
            ("has space", "{has space}"),
            ("$var [cmd]", "{$var [cmd]}"),
            ("x\\y", "{x\\y}"),
            ("{balanced}", "{{balanced}}"),
            ("a}b", "a\\}b"),
            ("a{b", "a\\{b"),
            ("}{", "\\}\\{"),
            ("a\\}b", "{a\\}b}"),
            ("ends\\", "ends\\\\"),
            ("x\\\\", "{x\\\\}"),
            ("q\"uote", "{q\"uote}"),
            ("#hash", "{#hash}"),
            ("", "{}"),
            ("nl\nline", "{nl\nline}"),
        ];
        for (input, _canon) in v {
            let q = quote_word(input);
            assert_eq!(
                split_list(&q).unwrap(),
                vec![input.to_string()],
                "{input:?} -> {q}"
            );
        }
        assert_eq!(quote_word("a}b"), "a\\}b");
        assert_eq!(quote_word("has space"), "{has space}");
    }

    #[test]
    fn validation_rejects_bad_scripts() {
        assert!(matches!(
            validate("Job -title {x} -subtasks {Task {bad}}}"),
            Err(ScriptError::Syntax { .. })
        ));
        assert!(matches!(
            validate("Job -title x -subtasks {Tsk {a}}"),
            Err(ScriptError::UnknownOperator(_))
        ));
        assert!(matches!(
            validate("Job -title x -subtasks {Instance nope}"),
            Err(ScriptError::UnknownInstance(_))
        ));
        assert!(matches!(
            validate("Job -title x -subtasks {Task {a} -subtasks {Task {b} -id {q}}"),
            Err(ScriptError::Syntax { .. })
        ));
        let ok = validate(
            "Job -title x -subtasks {\n Task {a} -id a -cmds {RemoteCmd {{echo} {hi there}}} -subtasks {Task b -id b}\n Task c -subtasks {Instance b}\n}",
        )
        .unwrap();
        assert_eq!(ok.all_tasks().len(), 3);
    }
}
