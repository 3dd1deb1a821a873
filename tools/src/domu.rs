//! `cargo xtask run --domu CONFIG`: turning xl.cfg(5) files into boot modules.
//!
//! What: keel builds a domU at boot from every multiboot module whose name ends in
//! `.cfg`; the config's `kernel = "..."` and `ramdisk = "..."` name other modules,
//! matched by the last path component of the value. Dom0 is the first module that is
//! neither a config nor named by one. [`plan`] reads each `--domu` file, finds the
//! files it names (relative paths are relative to the config's directory), and lists
//! the modules to boot: Dom0's (from `--dom0`/`--module`) first, then per config the
//! config and the kernel and ramdisk it names that are not in the boot yet.
//!
//! Invariants: every module gets an explicit, valid, boot-wide unique name (one file
//! named by several configs is one module), and no domU module shares a name with a
//! Dom0 module, since a module a config names is never Dom0. A config is passed on
//! byte for byte when every value it names already ends in its module's name; only
//! otherwise (two different `vmlinuz`, a name Dom0 already has, a name that is not a
//! plain file name, a key set twice) is a rewritten copy booted instead, written by
//! the harness into the run's work directory, with each such value replaced by the
//! module's bare name.
//!
//! Only enough of xl.cfg is parsed to find those two strings, but all of its syntax
//! is tokenised (as Xen's `libxlu` lexer and grammar do: `KEY = VALUE` or `KEY +=
//! VALUE`, separated by newlines or `;`, `#` comments, strings in single or double
//! quotes with backslash escapes, numbers, nested lists), so a value inside a comment
//! or another key's string is never mistaken for one. As in xl, the last assignment
//! of a key wins.
//!
//! Locking: none; the xtask is single-threaded.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use keel_tests::Module;
use keel_tests::iso::{is_valid_module_name, module_names, sanitize_name};

use crate::Error;

/// A config key naming a file to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKey {
    /// `kernel = "PATHNAME"`.
    Kernel,
    /// `ramdisk = "PATHNAME"`.
    Ramdisk,
}

impl FileKey {
    const ALL: [FileKey; 2] = [FileKey::Kernel, FileKey::Ramdisk];

    fn name(self) -> &'static str {
        match self {
            FileKey::Kernel => "kernel",
            FileKey::Ramdisk => "ramdisk",
        }
    }
}

/// One assignment of a [`FileKey`] in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSetting {
    /// Which key.
    pub key: FileKey,
    /// The string, unquoted and unescaped.
    pub value: String,
    /// Where the quoted string (quotes included) is in the text.
    pub span: Range<usize>,
}

/// Why a config could not be read; the message says where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong there.
    pub what: String,
}

impl fmt::Display for XlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Number,
    Str(String),
    Assign,
    AddAssign,
    Semicolon,
    Comma,
    Open,
    Close,
    Newline,
}

/// A token, its line and its byte range.
type Spanned = (Tok, usize, Range<usize>);

/// Splits `text` into tokens the way xl's lexer does (`\r` is taken as blank,
/// where xl would refuse it).
fn tokenize(text: &str) -> Result<Vec<Spanned>, XlError> {
    let bytes = text.as_bytes();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let err = |what: String| XlError { line, what };
        let tok = match c {
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\n' => {
                i += 1;
                toks.push((Tok::Newline, line, start..i));
                line += 1;
                continue;
            }
            b'a'..=b'z' => {
                while i < bytes.len() && matches!(bytes[i], b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_')
                {
                    i += 1;
                }
                Tok::Ident(text[start..i].to_string())
            }
            b'0'..=b'9' => {
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'a'..=b'f' | b'x') {
                    i += 1;
                }
                Tok::Number
            }
            b'"' | b'\'' => {
                let (value, end) = unquote(text, start).map_err(err)?;
                i = end;
                Tok::Str(value)
            }
            b'=' => {
                i += 1;
                Tok::Assign
            }
            b'+' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::AddAssign
            }
            b';' => {
                i += 1;
                Tok::Semicolon
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'[' => {
                i += 1;
                Tok::Open
            }
            b']' => {
                i += 1;
                Tok::Close
            }
            _ => {
                let ch = text[start..].chars().next().unwrap_or('?');
                return Err(err(format!("unexpected {ch:?}")));
            }
        };
        toks.push((tok, line, start..i));
    }
    Ok(toks)
}

/// Reads the quoted string starting at `text[start]`; returns its value and the
/// index after the closing quote. Escapes: `\"`, `\'`, `\\`, `\a \b \f \n \r \t \v`
/// and `\xHH`; libxlu's octal escapes are refused (it reads their digits oddly).
fn unquote(text: &str, start: usize) -> Result<(String, usize), String> {
    let quote = text.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\n' => break,
            c if c == quote => return Ok((out, start + 1 + at + 1)),
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                let unescaped = match e {
                    '"' | '\'' | '\\' => e,
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\u{b}',
                    'x' => {
                        let hex: String = chars.by_ref().take(2).map(|(_, h)| h).collect();
                        match u8::from_str_radix(&hex, 16) {
                            Ok(b) if hex.len() == 2 => char::from(b),
                            _ => return Err(format!("bad \\x escape \"\\x{hex}\"")),
                        }
                    }
                    other => return Err(format!("unsupported escape \"\\{other}\" in a string")),
                };
                out.push(unescaped);
            }
            c => out.push(c),
        }
    }
    Err("unterminated string".to_string())
}

/// The `kernel` and `ramdisk` string assignments of an xl.cfg text, in order.
pub fn file_settings(text: &str) -> Result<Vec<FileSetting>, XlError> {
    let toks = tokenize(text)?;
    let mut settings = Vec::new();
    let mut at = 0;
    let last_line = toks.last().map_or(1, |t| t.1);
    let err_at = |at: usize, what: &str| XlError {
        line: toks.get(at).map_or(last_line, |t| t.1),
        what: what.to_string(),
    };
    while at < toks.len() {
        let Tok::Ident(key) = &toks[at].0 else {
            if matches!(toks[at].0, Tok::Newline | Tok::Semicolon) {
                at += 1;
                continue;
            }
            return Err(err_at(at, "expected a setting (`key = value`)"));
        };
        let op = toks.get(at + 1).map(|t| &t.0);
        if !matches!(op, Some(Tok::Assign | Tok::AddAssign)) {
            return Err(err_at(at + 1, &format!("expected `=` after `{key}`")));
        }
        let value_at = at + 2;
        let end = skip_value(&toks, value_at).ok_or_else(|| err_at(value_at, "bad value"))?;
        if let Some(key) = FileKey::ALL.into_iter().find(|k| k.name() == key) {
            if op == Some(&Tok::AddAssign) {
                return Err(err_at(
                    at + 1,
                    &format!("`{} +=` is not supported", key.name()),
                ));
            }
            let Tok::Str(value) = &toks[value_at].0 else {
                return Err(err_at(
                    value_at,
                    &format!("`{}` must be a string", key.name()),
                ));
            };
            settings.push(FileSetting {
                key,
                value: value.clone(),
                span: toks[value_at].2.clone(),
            });
        }
        match toks.get(end).map(|t| &t.0) {
            None | Some(Tok::Newline | Tok::Semicolon) => at = end,
            Some(_) => return Err(err_at(end, "expected a newline or `;` after a setting")),
        }
    }
    Ok(settings)
}

/// The index after the value starting at `toks[at]` (a string, a number, or a
/// possibly nested list, newlines allowed inside), or `None` if there is none.
fn skip_value(toks: &[Spanned], at: usize) -> Option<usize> {
    match toks.get(at)?.0 {
        Tok::Str(_) | Tok::Number => Some(at + 1),
        Tok::Open => {
            let skip_newlines = |mut i: usize| {
                while matches!(toks.get(i), Some((Tok::Newline, ..))) {
                    i += 1;
                }
                i
            };
            let mut i = skip_newlines(at + 1);
            loop {
                if matches!(toks.get(i)?.0, Tok::Close) {
                    return Some(i + 1);
                }
                i = skip_newlines(skip_value(toks, i)?);
                match toks.get(i)?.0 {
                    Tok::Comma => i = skip_newlines(i + 1),
                    Tok::Close => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

/// One thing to add to the boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A file, with its module name.
    File(Module),
    /// A rewritten config: the harness writes `text` as the module `name`.
    Config {
        /// The module name, ending in `.cfg`.
        name: String,
        /// The config with its kernel/ramdisk values replaced by module names.
        text: String,
    },
}

/// Names already given out in this boot.
#[derive(Default)]
struct Names(HashSet<String>);

impl Names {
    /// The first of `candidates` that is free, else `<first>` numbered; taken.
    fn take(&mut self, candidates: &[String], numbered: impl Fn(usize) -> String) -> String {
        let name = candidates
            .iter()
            .find(|c| is_valid_module_name(c) && !self.0.contains(*c))
            .cloned()
            .unwrap_or_else(|| {
                (2..)
                    .map(&numbered)
                    .find(|c| !self.0.contains(c))
                    .unwrap_or_default()
            });
        self.0.insert(name.clone());
        name
    }
}

/// A plain file name: letters, digits, `-`, `_`, `.`; a leading `.` gets a stem.
fn plain(name: &str, stem: &str) -> String {
    let s = sanitize_name(name);
    if s.is_empty() || s.starts_with('.') {
        format!("{stem}{s}")
    } else {
        s
    }
}

/// Lists the modules of a boot with Dom0's `dom0` modules (Dom0 first, possibly
/// none) and the domUs of the `configs` files, in order.
pub fn plan(dom0: &[Module], configs: &[PathBuf]) -> Result<Vec<Item>, Error> {
    let mut names = Names::default();
    let mut items = Vec::new();
    let dom0_names = module_names(dom0).map_err(|e| Error(e.to_string()))?;
    for (m, name) in dom0.iter().zip(dom0_names) {
        names.0.insert(name.clone());
        items.push(Item::File(Module::named(&m.path, name, m.args.clone())));
    }
    // Files named by configs, by canonical path: each is one module.
    let mut shared: HashMap<PathBuf, String> = HashMap::new();
    for config in configs {
        let what = |e: &dyn fmt::Display| Error(format!("--domu {}: {e}", config.display()));
        let text = std::fs::read_to_string(config).map_err(|e| what(&e))?;
        let settings = file_settings(&text).map_err(|e| what(&e))?;

        let file_name = config
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = plain(file_name.strip_suffix(".cfg").unwrap_or(&file_name), "domu");
        let cfg_name = names.take(&[format!("{base}.cfg")], |n| format!("{base}-{n}.cfg"));
        let stem = cfg_name.trim_end_matches(".cfg").to_string();
        let dir = match config.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };

        let mut files = Vec::new();
        // Each key's module name, where it differs from what the config says.
        let mut renamed: Vec<(FileKey, String)> = Vec::new();
        for key in FileKey::ALL {
            let all: Vec<&FileSetting> = settings.iter().filter(|s| s.key == key).collect();
            let Some(last) = all.last() else { continue };
            let path = dir.join(&last.value);
            let canonical = std::fs::canonicalize(&path)
                .ok()
                .filter(|p| p.is_file())
                .ok_or_else(|| {
                    what(&format!(
                        "{} \"{}\": no such file {}",
                        key.name(),
                        last.value,
                        path.display()
                    ))
                })?;
            let wanted = last.value.rsplit('/').next().unwrap_or_default();
            let name = match shared.get(&canonical) {
                Some(name) => name.clone(),
                None => {
                    let p = plain(wanted, key.name());
                    let candidates = [wanted.to_string(), p.clone(), format!("{stem}-{p}")];
                    let name = names.take(&candidates, |n| format!("{stem}-{n}-{p}"));
                    shared.insert(canonical, name.clone());
                    files.push(Item::File(Module::named(path, name.clone(), "")));
                    name
                }
            };
            if name != wanted || all.len() > 1 {
                renamed.push((key, name));
            }
        }
        items.push(if renamed.is_empty() {
            Item::File(Module::named(config, cfg_name, ""))
        } else {
            Item::Config {
                name: cfg_name,
                text: rewrite(&text, &settings, &renamed),
            }
        });
        items.extend(files);
    }
    Ok(items)
}

/// `text` with every assignment of a `renamed` key set to its new name.
fn rewrite(text: &str, settings: &[FileSetting], renamed: &[(FileKey, String)]) -> String {
    let mut out = text.to_string();
    // From the end, so earlier spans stay valid.
    for s in settings.iter().rev() {
        if let Some((_, name)) = renamed.iter().find(|(k, _)| *k == s.key) {
            // Module names are plain file names: nothing to escape.
            out.replace_range(s.span.clone(), &format!("\"{name}\""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn values(text: &str) -> Vec<(FileKey, String)> {
        file_settings(text)
            .expect("parses")
            .into_iter()
            .map(|s| (s.key, s.value))
            .collect()
    }

    #[test]
    fn finds_kernel_and_ramdisk_only() {
        let text = "# kernel = \"commented.elf\"\n\
                    name = \"guest\" ; memory = 32\n\
                    kernel = \"/boot/vmlinuz\"   # trailing\n\
                    extra = 'kernel = \"not this\"'\n\
                    disk = [ 'phy:/dev/x,xvda,w',\n\
                    \t'file:/y,xvdb,r', ]\n\
                    vif = []\n\
                    ramdisk='initrd.img'\n\
                    cpus = [[0, 1], \"2\"]";
        assert_eq!(
            values(text),
            [
                (FileKey::Kernel, "/boot/vmlinuz".to_string()),
                (FileKey::Ramdisk, "initrd.img".to_string()),
            ]
        );
        let s = &file_settings(text).expect("parses")[0];
        assert_eq!(&text[s.span.clone()], "\"/boot/vmlinuz\"");
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(
            values(r#"kernel = "a\"b\\c\x41\t" ; ramdisk = 'it\'s'"#),
            [
                (FileKey::Kernel, "a\"b\\cA\t".to_string()),
                (FileKey::Ramdisk, "it's".to_string()),
            ]
        );
        assert_eq!(values("kernel=\"k\"\r\n"), [(FileKey::Kernel, "k".into())]);
    }

    #[test]
    fn mistakes_are_located() {
        let cases = [
            ("kernel = \"unterminated\n", 1, "unterminated"),
            ("\n\nkernel = 5\n", 3, "must be a string"),
            ("kernel += \"x\"\n", 1, "not supported"),
            ("name = \"a\" memory = 3\n", 1, "newline or `;`"),
            ("\nKernel = \"x\"\n", 2, "unexpected 'K'"),
            ("kernel = \"\\q\"\n", 1, "unsupported escape"),
            ("kernel = \"\\x4\"\n", 1, "\\x"),
            ("disk = [ 'a' 'b' ]\n", 1, "bad value"),
            ("kernel\n", 1, "expected `=`"),
            ("memory =", 1, "bad value"),
        ];
        for (text, line, what) in cases {
            let e = file_settings(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.what.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn arbitrary_text_never_panics() {
        // Every prefix of a config, and some byte soup, parses or errs cleanly.
        let text = "kernel = \"a\\x41\" ; disk = [ 'x', [ 1 ,\n ] ]\n# c\nramdisk='r'";
        for end in 0..=text.len() {
            if text.is_char_boundary(end) {
                let _ = file_settings(&text[..end]);
            }
        }
        for soup in [
            "\\", "'", "\"\\x", "+", "[[[[", "]]", "a=[", "a=[1,", "é = 1",
        ] {
            let _ = file_settings(soup);
        }
    }

    /// A scratch directory of this test process (removed by the caller).
    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("keel-xtask-domu-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn write(path: &Path, text: &str) {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("dir");
        }
        std::fs::write(path, text).expect("write");
    }

    fn file(path: &Path, name: &str) -> Item {
        Item::File(Module::named(path, name, ""))
    }

    #[test]
    fn plain_configs_pass_unchanged_and_shared_kernels_are_added_once() {
        let dir = scratch("plain");
        write(&dir.join("k/pvh64.elf"), "kernel");
        write(&dir.join("initrd.img"), "ramdisk");
        let a = dir.join("a.cfg");
        let b = dir.join("b.xl");
        write(&a, "kernel = \"k/pvh64.elf\"\nramdisk = \"initrd.img\"\n");
        write(&b, "kernel = \"k/../k/pvh64.elf\"\n");
        let items = plan(&[], &[a.clone(), b.clone()]).expect("plans");
        assert_eq!(
            items,
            [
                file(&a, "a.cfg"),
                file(&dir.join("k/pvh64.elf"), "pvh64.elf"),
                file(&dir.join("initrd.img"), "initrd.img"),
                file(&b, "b.xl.cfg"),
            ]
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn clashing_names_are_renamed_in_a_copy() {
        let dir = scratch("clash");
        write(&dir.join("one/vmlinuz"), "kernel one");
        write(&dir.join("two/vmlinuz"), "kernel two");
        write(&dir.join("dom0.elf"), "dom0");
        let a = dir.join("a.cfg");
        let b = dir.join("b.cfg");
        let c = dir.join("c.cfg");
        write(&a, "kernel = \"one/vmlinuz\"\n");
        write(&b, "name = \"b\"\nkernel = \"two/vmlinuz\" # mine\n");
        // The same file as Dom0 must be a module of its own for the domU.
        write(&c, "kernel = 'x'\nkernel = \"dom0.elf\"\n");
        let dom0 = [Module::new(dir.join("dom0.elf"), "console=hvc0")];
        let items = plan(&dom0, &[a.clone(), b, c]).expect("plans");
        assert_eq!(
            items,
            [
                Item::File(Module::named(
                    dir.join("dom0.elf"),
                    "dom0.elf",
                    "console=hvc0"
                )),
                file(&a, "a.cfg"),
                file(&dir.join("one/vmlinuz"), "vmlinuz"),
                Item::Config {
                    name: "b.cfg".into(),
                    text: "name = \"b\"\nkernel = \"b-vmlinuz\" # mine\n".into(),
                },
                file(&dir.join("two/vmlinuz"), "b-vmlinuz"),
                Item::Config {
                    name: "c.cfg".into(),
                    text: "kernel = \"c-dom0.elf\"\nkernel = \"c-dom0.elf\"\n".into(),
                },
                file(&dir.join("dom0.elf"), "c-dom0.elf"),
            ]
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn odd_names_and_repeated_configs() {
        let dir = scratch("odd");
        write(&dir.join("my kernel"), "k");
        let cfg = dir.join("guest");
        write(&cfg, "kernel = \"my kernel\"\n");
        let items = plan(&[], &[cfg.clone(), cfg.clone()]).expect("plans");
        assert_eq!(
            items,
            [
                Item::Config {
                    name: "guest.cfg".into(),
                    text: "kernel = \"my_kernel\"\n".into(),
                },
                file(&dir.join("my kernel"), "my_kernel"),
                Item::Config {
                    name: "guest-2.cfg".into(),
                    text: "kernel = \"my_kernel\"\n".into(),
                },
            ]
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn missing_files_and_bad_configs_are_explained() {
        let dir = scratch("missing");
        let cfg = dir.join("a.cfg");
        write(&cfg, "kernel = \"nope.elf\"\n");
        let e = plan(&[], std::slice::from_ref(&cfg)).expect_err("no kernel");
        assert!(e.0.contains("a.cfg") && e.0.contains("nope.elf"), "{e}");
        write(&cfg, "kernel = [\"x\"]\n");
        let e = plan(&[], std::slice::from_ref(&cfg)).expect_err("list");
        assert!(e.0.contains("line 1"), "{e}");
        let e = plan(&[], &[dir.join("absent.cfg")]).expect_err("no config");
        assert!(e.0.contains("absent.cfg"), "{e}");
        // A config without a kernel (e.g. HVM) is still a domU for keel to judge.
        write(&cfg, "memory = 32\n");
        assert_eq!(
            plan(&[], std::slice::from_ref(&cfg)).expect("ok"),
            [file(&cfg, "a.cfg")]
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
