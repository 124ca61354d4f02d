//! Assertions: Common Expression Language (CEL, through the `cel` crate) over
//! `context.auth.claims` (the token's claims) and `context.document` (the record acted on).
//!
//! Cost is bounded before anything runs, not by a timer:
//! - an assertion is at most [`MAX_SOURCE_BYTES`] long, nests brackets at most
//!   [`MAX_NESTING`] deep (checked before the parser sees it) and compiles to at most
//!   [`MAX_NODES`] nodes;
//! - no comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`): with them a hostile
//!   document's lists would drive loops; without them every node does work at most linear in
//!   the values it is handed;
//! - only the functions in [`ALLOWED_FUNCTIONS`], and `matches` only with a literal pattern (the
//!   `regex` crate matches in linear time);
//! - identifiers only as paths under `context.auth.claims` or `context.document`;
//! - the document at most [`MAX_DOCUMENT_DEPTH`] deep, [`MAX_DOCUMENT_NODES`] values and
//!   [`MAX_DOCUMENT_STRING_BYTES`] of strings and keys: a larger one is refused (denied) before
//!   any assertion sees it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::types::{CelBool, CelString};
use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value};

pub const MAX_SOURCE_BYTES: usize = 1024;
pub const MAX_NESTING: usize = 16;
pub const MAX_NODES: usize = 64;
/// The deepest a compiled assertion may be (its evaluation recurses this deep at most).
pub const MAX_DEPTH: usize = 24;
/// The longest `matches` pattern, and the most its compiled program may take.
pub const MAX_PATTERN_BYTES: usize = 256;
/// Bounds the matcher's states, so a match costs at most a bounded multiple of its input.
const MAX_REGEX_SIZE: usize = 64 * 1024;
pub const MAX_DOCUMENT_DEPTH: usize = 32;
pub const MAX_DOCUMENT_NODES: usize = 10_000;
pub const MAX_DOCUMENT_STRING_BYTES: usize = 64 * 1024;
/// The longest single string (or key) of a document.
pub const MAX_DOCUMENT_STRING: usize = 8 * 1024;

/// Operators and functions an assertion may call.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "_-_",
    "_+_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_>=_",
    "_<=_",
    "_>_",
    "_<_",
    "-_",
    "_[_]",
    "@in",
    "@not_strictly_false",
    "has",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "bool",
];

const COMPREHENSIONS: &[&str] = &["all", "exists", "exists_one", "map", "filter"];

/// The one standard environment every assertion runs in.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // `matches` is Sigil's own (the crate's, without its `regex` feature, is not registered):
    // the crate's compiles the pattern on every call (0.4-0.8 ms for an everyday pattern), this
    // one compiles each checked pattern once.
    if let Err(e) = cel::add_member_overload!(
        env,
        fn string_matches: (CelString, CelString) -> Result<CelBool>,
        name = "matches",
        id = "string.matches(string)"
    ) {
        tracing::error!(error = %e, "matches() could not be registered; assertions using it deny");
    }
    Arc::new(env)
});

/// Compiled patterns by source: only patterns that passed [`compile`]'s check reach it, a
/// bounded number of them.
static REGEXES: LazyLock<std::sync::RwLock<HashMap<String, Arc<regex::Regex>>>> =
    LazyLock::new(Default::default);
const REGEX_CACHE_MAX: usize = 4096;
/// The longest string `matches` runs on (a longer one is an error: the request is denied). With
/// the pattern limits this bounds a match: about 10 ms for the most pathological pattern they
/// let through, microseconds for everyday ones.
pub const MAX_MATCHED_BYTES: usize = 1024;

/// A pattern compiled with the limits: its compiled program at most [`MAX_REGEX_SIZE`], and room
/// for the lazy DFA so that matching stays linear in the input where it can.
fn build_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(4 * 1024 * 1024)
        .build()
        .map_err(|e| first_line(&e.to_string()))
}

fn cached_regex(pattern: &str) -> Result<Arc<regex::Regex>, String> {
    if let Some(r) = REGEXES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(pattern)
    {
        return Ok(r.clone());
    }
    let r = Arc::new(build_regex(pattern)?);
    let mut all = REGEXES.write().unwrap_or_else(|p| p.into_inner());
    if all.len() < REGEX_CACHE_MAX {
        all.insert(pattern.to_owned(), r.clone());
    }
    Ok(r)
}

fn string_matches(
    this: &CelString<'_>,
    pattern: &CelString<'_>,
) -> Result<CelBool, cel::ExecutionError> {
    if this.inner().len() > MAX_MATCHED_BYTES {
        return Err(cel::ExecutionError::function_error(
            "matches",
            format!("the string is longer than {MAX_MATCHED_BYTES} bytes"),
        ));
    }
    let re = cached_regex(pattern.inner())
        .map_err(|e| cel::ExecutionError::function_error("matches", e))?;
    Ok(CelBool::from(re.is_match(this.inner())))
}

/// A compiled, checked assertion.
#[derive(Debug)]
pub struct Assertion {
    program: Program,
    /// Whether it reads `context.document` (else the document is never converted for it).
    pub uses_document: bool,
    /// Whether it reads `context.auth.claims`.
    pub uses_claims: bool,
}

/// Compiles `source` and checks it against the rules above; the error says what is wrong.
pub fn compile(source: &str) -> Result<Assertion, String> {
    if source.trim().is_empty() {
        return Err("an assertion is empty".into());
    }
    if source.len() > MAX_SOURCE_BYTES {
        return Err(format!(
            "an assertion is longer than {MAX_SOURCE_BYTES} bytes"
        ));
    }
    // Brackets are counted wherever they are (string literals and comments too), so at most
    // `2 * MAX_NESTING` in all: a closing bracket in a string cannot hide real nesting.
    if source.bytes().filter(|b| b"([{".contains(b)).count() > 2 * MAX_NESTING {
        return Err(format!(
            "an assertion has more than {} opening brackets",
            2 * MAX_NESTING
        ));
    }
    let mut depth = 0usize;
    for b in source.bytes() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!("an assertion nests deeper than {MAX_NESTING}"));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    // The parser (ANTLR-generated, recursive descent) needs far more stack per bracket than a
    // runtime worker thread has: a dozen levels overflow 2 MiB in a debug build, which aborts the
    // process. Parsing and the checks run on a thread of their own with a large stack; a panic
    // there is a refusal, never a crash. Only a checked program (at most `MAX_DEPTH` deep) comes
    // back, and only such a program is ever evaluated, on whatever thread asks.
    let source = source.to_owned();
    std::thread::Builder::new()
        .name("cel-compile".into())
        .stack_size(PARSER_STACK_BYTES)
        .spawn(move || {
            let program = std::panic::catch_unwind(|| ENV.compile(&source))
                .map_err(|_| "does not compile (the parser failed)".to_owned())?
                .map_err(|e| format!("does not compile: {}", first_line(&e.to_string())))?;
            let mut walk = Walk::default();
            walk.expr(program.expression(), 0)?;
            Ok(Assertion {
                program,
                uses_document: walk.uses_document,
                uses_claims: walk.uses_claims,
            })
        })
        .map_err(|e| format!("cannot compile now: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("does not compile (the parser failed)".into()))
}

/// The stack of the thread assertions are parsed on (address space; only what is used is
/// committed).
const PARSER_STACK_BYTES: usize = 64 * 1024 * 1024;

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

#[derive(Default)]
struct Walk {
    nodes: usize,
    uses_document: bool,
    uses_claims: bool,
}

impl Walk {
    fn expr(&mut self, e: &IdedExpr, depth: usize) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > MAX_NODES || depth > MAX_DEPTH {
            return Err(format!("an assertion has more than {MAX_NODES} operations"));
        }
        match &e.expr {
            Expr::Ident(_) | Expr::Select(_) => self.path(e, depth),
            Expr::Call(call) => {
                let name = call.func_name.as_str();
                if COMPREHENSIONS.contains(&name) {
                    return Err(format!("{name}() is not allowed (no comprehensions)"));
                }
                if !ALLOWED_FUNCTIONS.contains(&name) {
                    return Err(format!("the function {name}() is not allowed"));
                }
                if name == "matches" {
                    if call.target.is_none() {
                        return Err("write matches() as a method: s.matches('pattern')".into());
                    }
                    let pattern = call.args.first();
                    let Some(Expr::Literal(LiteralValue::String(p))) = pattern.map(|p| &p.expr)
                    else {
                        return Err("matches() takes a literal pattern".into());
                    };
                    // Compiled now, with tighter limits than at evaluation: a pattern that
                    // would fail or cost there is refused here.
                    let p: &str = p.inner();
                    if p.len() > MAX_PATTERN_BYTES {
                        return Err(format!(
                            "a matches() pattern is longer than {MAX_PATTERN_BYTES} bytes"
                        ));
                    }
                    build_regex(p).map_err(|e| format!("matches() pattern: {e}"))?;
                }
                if let Some(t) = &call.target {
                    self.expr(t, depth + 1)?;
                }
                for a in &call.args {
                    self.expr(a, depth + 1)?;
                }
                Ok(())
            }
            Expr::Comprehension(_) => Err("comprehensions are not allowed".into()),
            Expr::Literal(_) => Ok(()),
            Expr::List(l) => {
                for el in &l.elements {
                    self.expr(el, depth + 1)?;
                }
                Ok(())
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(me) => {
                            self.expr(&me.key, depth + 1)?;
                            self.expr(&me.value, depth + 1)?;
                        }
                        EntryExpr::StructField(_) => return Err("struct literals".into()),
                    }
                }
                Ok(())
            }
            Expr::Struct(_) => Err("struct literals are not allowed".into()),
            Expr::Unspecified => Err("an incomplete expression".into()),
        }
    }

    /// A chain of field selections must be rooted at `context` and start with `auth.claims` or
    /// `document`.
    fn path(&mut self, e: &IdedExpr, depth: usize) -> Result<(), String> {
        let mut fields = Vec::new();
        let mut cur = e;
        loop {
            match &cur.expr {
                Expr::Select(s) => {
                    fields.push(s.field.as_str());
                    cur = &s.operand;
                    self.nodes += 1;
                    if fields.len() > MAX_DEPTH {
                        return Err(format!(
                            "an assertion nests deeper than {MAX_DEPTH} operations"
                        ));
                    }
                }
                Expr::Ident(name) => {
                    fields.push(name.as_str());
                    break;
                }
                // `(expr).field`: select on a computed value, checked as an expression.
                _ => return self.expr(cur, depth + 1),
            }
        }
        fields.reverse();
        match fields.as_slice() {
            ["context", "auth", "claims", ..] => {
                self.uses_claims = true;
                Ok(())
            }
            ["context", "document", ..] => {
                self.uses_document = true;
                Ok(())
            }
            _ => Err(format!(
                "{} is not context.auth.claims or context.document",
                fields.join(".")
            )),
        }
    }
}

/// Why a document was not given to the assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentError {
    TooLarge,
}

/// Checks the document against the limits without converting it.
pub fn check_document(doc: &serde_json::Value) -> Result<(), DocumentError> {
    let mut budget = Budget::default();
    measure(doc, 0, &mut budget)
}

#[derive(Default)]
struct Budget {
    nodes: usize,
    bytes: usize,
}

impl Budget {
    fn take(&mut self, bytes: usize) -> Result<(), DocumentError> {
        if bytes > MAX_DOCUMENT_STRING {
            return Err(DocumentError::TooLarge);
        }
        self.nodes += 1;
        self.bytes += bytes;
        if self.nodes > MAX_DOCUMENT_NODES || self.bytes > MAX_DOCUMENT_STRING_BYTES {
            Err(DocumentError::TooLarge)
        } else {
            Ok(())
        }
    }
}

fn measure(v: &serde_json::Value, depth: usize, b: &mut Budget) -> Result<(), DocumentError> {
    if depth > MAX_DOCUMENT_DEPTH {
        return Err(DocumentError::TooLarge);
    }
    match v {
        serde_json::Value::String(s) => b.take(s.len()),
        serde_json::Value::Array(a) => {
            b.take(0)?;
            a.iter().try_for_each(|x| measure(x, depth + 1, b))
        }
        serde_json::Value::Object(o) => {
            b.take(0)?;
            o.iter().try_for_each(|(k, x)| {
                b.take(k.len())?;
                measure(x, depth + 1, b)
            })
        }
        _ => b.take(0),
    }
}

/// A JSON value as CEL sees it (call after [`check_document`] for anything untrusted).
pub fn to_cel(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => Value::List(Arc::new(a.iter().map(to_cel).collect())),
        serde_json::Value::Object(o) => Value::Map(object(o.iter().map(|(k, v)| (k, to_cel(v))))),
    }
}

/// A CEL map from string keys.
pub(crate) fn object<'a>(entries: impl Iterator<Item = (&'a String, Value)>) -> Map {
    let map: HashMap<Key, Value> = entries
        .map(|(k, v)| (Key::String(Arc::new(k.clone())), v))
        .collect();
    Map { map: Arc::new(map) }
}

/// What an assertion decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Holds,
    Fails,
    /// It did not evaluate to a boolean (a missing field, a type error, an overflow...).
    Error(String),
}

/// The variables assertions run with: `context`, holding `auth.claims` and `document` (each
/// only when some assertion reads it, so a request pays for converting what is read).
pub fn context(claims: Option<Value>, document: Option<Value>) -> Context<'static, 'static> {
    let mut entries = Vec::with_capacity(2);
    if let Some(c) = claims {
        let auth = object([(&"claims".to_owned(), c)].into_iter());
        entries.push(("auth".to_owned(), Value::Map(auth)));
    }
    if let Some(d) = document {
        entries.push(("document".to_owned(), d));
    }
    let mut ctx = Context::with_env(ENV.clone());
    ctx.add_variable_from_value(
        "context",
        Value::Map(object(entries.iter().map(|(k, v)| (k, v.clone())))),
    );
    ctx
}

impl Assertion {
    /// Evaluates in `ctx` (made by [`context`] with what this assertion reads).
    pub fn evaluate(&self, ctx: &Context<'_, '_>) -> Outcome {
        // A panic in the interpreter is an error like any other: the request is denied.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.program.execute(ctx)));
        let Ok(result) = result else {
            return Outcome::Error("the interpreter failed".into());
        };
        match result {
            Ok(Value::Bool(true)) => Outcome::Holds,
            Ok(Value::Bool(false)) => Outcome::Fails,
            Ok(other) => Outcome::Error(format!("not a boolean: {:?}", other.type_of())),
            Err(e) => Outcome::Error(first_line(&e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context(claims: serde_json::Value, doc: serde_json::Value) -> Context<'static, 'static> {
        super::context(Some(to_cel(&claims)), Some(to_cel(&doc)))
    }

    #[test]
    fn assertions_that_compile_and_run() {
        let ctx = context(
            json!({"sub": "u1", "groups": ["compliance_officer"], "acr": "urn:sigil:acr:passkey"}),
            json!({"amount": 5000, "owner": "u1", "currency": "USD", "rate": 1.5,
                   "long": "x".repeat(MAX_MATCHED_BYTES + 1)}),
        );
        let cases = [
            ("context.document.amount <= 10000", Outcome::Holds),
            ("context.document.amount > 10000", Outcome::Fails),
            (
                "'compliance_officer' in context.auth.claims.groups",
                Outcome::Holds,
            ),
            (
                "context.auth.claims.sub == context.document.owner",
                Outcome::Holds,
            ),
            (
                "context.document.currency in ['USD', 'EUR']",
                Outcome::Holds,
            ),
            ("has(context.document.status)", Outcome::Fails),
            (
                "context.document.currency.matches('^[A-Z]{3}$')",
                Outcome::Holds,
            ),
            ("size(context.auth.claims.groups) == 1", Outcome::Holds),
            ("context.document.rate < 2.0", Outcome::Holds),
        ];
        for (src, want) in cases {
            let a = compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(a.evaluate(&ctx), want, "{src}");
        }
        for src in [
            "context.document.missing == 1",
            "context.document.amount",
            "context.document.amount * 9223372036854775807 > 0",
            "context.document.owner > 3",
            "context.document.long.matches('^x+$')",
        ] {
            let a = compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert!(matches!(a.evaluate(&ctx), Outcome::Error(_)), "{src}");
        }
    }

    #[test]
    fn refused_when_written() {
        let deep = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        let hidden = format!(
            "{}'{}' + {}1{} == ''",
            "(".repeat(15),
            ")".repeat(15),
            "(".repeat(20),
            ")".repeat(20)
        );
        let long = format!("context.document.a == '{}'", "x".repeat(2000));
        let many = (0..70)
            .map(|i| format!("context.document.a == {i}"))
            .collect::<Vec<_>>()
            .join(" || ");
        for src in [
            "",
            "request.amount < 5",
            "context.session.id == 'x'",
            "context.auth.scope == 'x'",
            "context == {}",
            "context['document'].amount < 5",
            "[1, 2, 3].all(x, x > 0)",
            "context.document.items.exists(i, i.amount > 5)",
            "context.document.items.map(i, context.document.items.map(j, i + j)).size() > 0",
            "context.document.s.matches(context.document.pattern)",
            "matches(context.document.s, '^a$')",
            "timestamp('2024-01-01T00:00:00Z') < now",
            "context.document.amount <= ",
            deep.as_str(),
            hidden.as_str(),
            long.as_str(),
            many.as_str(),
        ] {
            assert!(compile(src).is_err(), "{src:?} compiled");
        }
    }

    #[test]
    fn nesting_at_the_limits_crashes_neither_the_parser_nor_the_evaluation() {
        // Parsed on the compile thread (a dozen levels overflowed a 2 MiB worker stack in a
        // debug build); whatever compiles is evaluated here, on a test thread's 2 MiB stack.
        let ctx = context(json!({"sub": "u"}), json!({"a": 1, "l": [1]}));
        let mut compiled = 0;
        for n in 1..=MAX_NESTING {
            let (open, close) = ("(".repeat(n), ")".repeat(n));
            let (lo, lc) = ("[".repeat(n), "]".repeat(n));
            for src in [
                format!("{open}context.document.a{close} == 1"),
                format!("{lo}1{lc} == context.document.l"),
                format!("{open}context.document.a + {open}1{close}{close} > 0"),
            ] {
                if let Ok(a) = compile(&src) {
                    compiled += 1;
                    let _ = a.evaluate(&ctx);
                }
            }
        }
        assert!(compiled > 0);
        // The deepest chains within the node limit.
        let sum = vec!["context.document.a"; 30].join(" + ");
        let and = vec!["context.document.a == 1"; 20].join(" && ");
        for src in [format!("{sum} > 0"), and, "!".repeat(500) + "true"] {
            if let Ok(a) = compile(&src) {
                let _ = a.evaluate(&ctx);
            }
        }
    }

    #[test]
    fn patterns_are_compiled_when_written() {
        assert!(compile("context.document.s.matches('^[A-Z]{3}$')").is_ok());
        assert!(
            compile("context.document.iban.matches('^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$')").is_ok()
        );
        assert!(compile("context.document.memo.matches('^[A-Za-z0-9 .,-]{0,140}$')").is_ok());
        for bad in [
            "(",
            "a{100000}",
            "(\\w{100}){100}",
            &"a".repeat(300),
            "(?:[ab]*a[ab]{12}c|(?:[ab]?){1500}c)",
        ] {
            let src = format!("context.document.s.matches('{bad}')");
            assert!(compile(&src).is_err(), "{src}");
        }
    }

    #[test]
    fn documents_beyond_the_limits_are_refused() {
        assert!(check_document(&json!({"amount": 1, "tags": ["a", "b"]})).is_ok());
        let wide = serde_json::Value::Array(vec![json!(1); MAX_DOCUMENT_NODES + 1]);
        assert_eq!(check_document(&wide), Err(DocumentError::TooLarge));
        let mut deep = json!(1);
        for _ in 0..(MAX_DOCUMENT_DEPTH + 1) {
            deep = json!([deep]);
        }
        assert_eq!(check_document(&deep), Err(DocumentError::TooLarge));
        let long = json!({"s": "x".repeat(MAX_DOCUMENT_STRING + 1)});
        assert_eq!(check_document(&long), Err(DocumentError::TooLarge));
        let many: serde_json::Map<String, serde_json::Value> = (0..9)
            .map(|i| (format!("k{i}"), json!("x".repeat(MAX_DOCUMENT_STRING))))
            .collect();
        assert_eq!(check_document(&many.into()), Err(DocumentError::TooLarge));
    }
}
