//! A secret of any supported format, inserted anywhere in random text (mid
//! word, beside punctuation, inside a JSON string), never survives, and
//! scrubbing is idempotent.

use proptest::prelude::*;
use proptest::sample::Index;
use saga_runtime::redact::scrub;

/// A snippet to insert and the substrings of it that must not survive.
#[derive(Debug, Clone)]
struct Planted {
    snippet: String,
    needles: Vec<String>,
}

fn token(re: &'static str) -> BoxedStrategy<Planted> {
    re.prop_map(|s| Planted { needles: vec![s.clone()], snippet: s }).boxed()
}

/// Random keys carry a digit followed by a letter somewhere, as generated
/// credentials do (and as the value checks rely on to tell keys from code
/// identifiers such as `hashlib.sha256`).
const VALUE: &str = "[A-Za-z]{3}[0-9][a-z][A-Z][A-Za-z0-9!@#%^+=~-]{4,12}[0-9]";

fn generic() -> BoxedStrategy<Planted> {
    let keys = prop::sample::select(vec![
        "password",
        "DB_PASSWORD",
        "client_secret",
        "api_key",
        "SENDGRID_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "auth_token",
        "token",
        "x-api-key",
        "secret",
        "pwd",
        "apiKey",
    ]);
    let shapes = prop::sample::select(vec![
        "{k}={v}",
        "{k}: {v}",
        "\"{k}\": \"{v}\"",
        "{k} = '{v}'",
        "export {k}={v}",
        "{k} => {v}",
    ]);
    (keys, shapes, VALUE)
        .prop_map(|(k, shape, v)| Planted { snippet: shape.replace("{k}", k).replace("{v}", &v), needles: vec![v] })
        .boxed()
}

fn pem() -> BoxedStrategy<Planted> {
    ("(RSA |EC |OPENSSH )?", "[A-Za-z0-9+/]{64}", "[A-Za-z0-9+/]{20,63}=?")
        .prop_map(|(kind, l1, l2)| Planted {
            snippet: format!("-----BEGIN {kind}PRIVATE KEY-----\n{l1}\n{l2}\n-----END {kind}PRIVATE KEY-----"),
            needles: vec![l1, l2],
        })
        .boxed()
}

fn with_context(prefix: &'static str, re: &'static str, suffix: &'static str) -> BoxedStrategy<Planted> {
    re.prop_map(move |s| Planted { snippet: format!("{prefix}{s}{suffix}"), needles: vec![s] }).boxed()
}

fn secret() -> impl Strategy<Value = Planted> {
    prop_oneof![
        token("(AKIA|ASIA)[A-Z2-7]{7}[2-7][A-Z2-7]{8}"),
        token("gh[pousr]_[A-Za-z0-9]{10}[0-9][A-Z][a-z][A-Za-z0-9]{23}"),
        token("github_pat_[A-Za-z0-9]{10}[0-9][A-Z][a-z][A-Za-z0-9]{9}_[A-Za-z0-9]{59}"),
        token("glpat-[A-Za-z0-9_-]{8}[0-9][A-Z][a-z][A-Za-z0-9_-]{9}"),
        token("xox[bp]-[0-9]{11}-[0-9]{12}-[A-Za-z0-9]{24}"),
        token("(sk|rk)_(live|test)_[A-Za-z0-9]{10}[0-9][A-Z][a-z][A-Za-z0-9]{11}"),
        token("sk-proj-[A-Za-z0-9_-]{30}[0-9][A-Z][a-z][A-Za-z0-9_-]{30}"),
        token("sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"),
        token("sk-ant-api03-[A-Za-z0-9_-]{40}[0-9][A-Z][a-z][A-Za-z0-9_-]{50}AA"),
        token("AIza[A-Za-z0-9_-]{15}[0-9][A-Z][a-z][A-Za-z0-9_-]{17}"),
        token("SK[0-9a-f]{15}[0-9][a-f][0-9a-f]{15}"),
        token("SG\\.[A-Za-z0-9_-]{22}\\.[A-Za-z0-9_-]{20}[0-9][A-Z][a-z][A-Za-z0-9_-]{20}"),
        token("npm_[A-Za-z0-9]{17}[0-9][A-Z][a-z][A-Za-z0-9]{16}"),
        token("pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{60}"),
        token("hf_[A-Za-z]{16}[A-Z][a-z][A-Za-z]{16}"),
        token("eyJhbGciOiJIUzI1NiJ9\\.eyJ[A-Za-z0-9_-]{20,40}\\.[A-Za-z0-9_-]{43}"),
        pem(),
        generic(),
        with_context("Authorization: Bearer ", "[A-Za-z0-9_-]{15}[0-9][A-Z][a-z][A-Za-z0-9_-]{15}", ""),
        with_context(
            "postgres://app:",
            "[A-Za-z0-9]{6}[0-9][A-Za-z][A-Za-z0-9/@]{0,6}[A-Za-z0-9]{2}",
            "@db.example.com/app"
        ),
        with_context("redis://:", "[A-Za-z0-9]{6}[0-9][A-Za-z][A-Za-z0-9]{6}", "@cache:6379"),
        with_context("https://b.s3.amazonaws.com/k?X-Amz-Date=20240101T000000Z&X-Amz-Signature=", "[0-9a-f]{64}", ""),
        with_context("https://hooks.slack.com/services/", "T[A-Z0-9]{8}/B[A-Z0-9]{10}/[A-Za-z0-9]{24}", ""),
    ]
}

/// Prose-ish text: words, capitals, digits, punctuation, newlines, unicode.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z]{1,10}",
        1 => "[A-Z][a-z]{0,8}",
        1 => "[0-9]{1,4}",
        2 => prop::sample::select(vec![" ", " ", " ", "\n", ", ", ". ", ": ", "; ", "(", ")", "\"", "'", "-", "_", "/", "=", "#", "[", "]", "{", "}", "\\", "%", "&", "@", "*", "`", "\t"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["héllo", "日本語", "naïve", "🚀", "Ωmega", "straße", "данные"]).prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

fn insert(text: &str, at: Index, snippet: &str) -> String {
    let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
    let pos = boundaries[at.index(boundaries.len())];
    format!("{}{snippet}{}", &text[..pos], &text[pos..])
}

#[derive(Debug, Clone, Copy)]
enum Wrap {
    Raw,
    Quoted,
    JsonString,
}

fn leaked(out: &str, needles: &[String]) -> Option<String> {
    needles.iter().find_map(|n| {
        let w = n.len().min(12);
        n.as_bytes()
            .windows(w)
            .filter_map(|win| std::str::from_utf8(win).ok())
            .find(|win| out.contains(win))
            .map(str::to_owned)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn planted_secret_never_survives(
        base in text(),
        planted in secret(),
        at in any::<Index>(),
        wrap in prop_oneof![Just(Wrap::Raw), Just(Wrap::Quoted), Just(Wrap::JsonString)],
    ) {
        let snippet = match wrap {
            Wrap::Quoted => format!("\"{}\"", planted.snippet),
            Wrap::Raw | Wrap::JsonString => planted.snippet.clone(),
        };
        let mut input = insert(&base, at, &snippet);
        if matches!(wrap, Wrap::JsonString) {
            input = serde_json::json!({"role": "tool", "content": input}).to_string();
        }
        let out = scrub(&input);
        prop_assert!(leaked(&out, &planted.needles).is_none(), "leaked {:?}\n in: {:?}\nout: {:?}", leaked(&out, &planted.needles), input, out);
        prop_assert_eq!(scrub(&out), out.clone(), "not idempotent on {:?}", input);
    }

    #[test]
    fn scrubbing_is_idempotent_on_random_text(base in text(), planted in prop::option::of(secret()), at in any::<Index>()) {
        let input = match planted {
            Some(p) => insert(&base, at, &p.snippet),
            None => base,
        };
        let once = scrub(&input);
        prop_assert_eq!(scrub(&once), once.clone());
    }
}
