use super::*;
use serde::Deserialize;

fn parse(text: &str) -> Vec<Node> {
    parse_documents(text.as_bytes(), &Limits::default()).expect("valid YAML")
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Spec {
    prefix: String,
    port: Option<u16>,
    #[serde(default)]
    headers: Vec<Header>,
    here: Option<At<String>>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
}

#[test]
fn documents_keep_their_positions() {
    let docs = parse("a: 1\n---\n# comment\nb:\n  c: [x, y]\n---\n");
    assert_eq!(docs.len(), 2, "the empty third document is left out");
    assert_eq!((docs[0].line, docs[0].column), (1, 1));
    let c = docs[1].get("b").and_then(|b| b.get("c")).expect("b.c");
    assert_eq!(c.line, 5);
    match &c.value {
        Value::Seq(items) => assert_eq!(items[1].as_str(), Some("y")),
        other => panic!("expected a list, got {other:?}"),
    }
}

#[test]
fn decode_reads_typed_fields_and_positions() {
    let docs = parse("prefix: /a\nport: 80\nheaders:\n  - name: x\nhere: there\n");
    let spec: Spec = decode(&docs[0], "spec").expect("decodes");
    assert_eq!(spec.prefix, "/a");
    assert_eq!(spec.port, Some(80));
    assert_eq!(spec.headers, vec![Header { name: "x".into() }]);
    let here = spec.here.expect("here");
    assert_eq!(
        (here.value.as_str(), here.line, here.column),
        ("there", 5, 7)
    );
}

#[test]
fn unknown_field_names_path_line_and_suggestion() {
    let docs = parse("prefix: /a\nheaders:\n  - name: x\n    nmae: y\n");
    let err = decode::<Spec>(&docs[0], "spec").expect_err("typo");
    assert_eq!(err.path, "spec.headers[0].nmae");
    assert_eq!((err.line, err.column), (4, 5));
    assert!(
        err.message.contains("did you mean `name`"),
        "{}",
        err.message
    );
}

#[test]
fn wrong_type_points_at_the_value() {
    let docs = parse("prefix: /a\nport: 70000\n");
    let err = decode::<Spec>(&docs[0], "spec").expect_err("out of range");
    assert_eq!(err.path, "spec.port");
    assert_eq!((err.line, err.column), (2, 7));
    assert!(err.message.contains("u16"), "{}", err.message);

    let docs = parse("prefix: [1]\n");
    let err = decode::<Spec>(&docs[0], "").expect_err("list for string");
    assert_eq!(err.path, "prefix");
    assert!(err.message.contains("found sequence"), "{}", err.message);
}

#[test]
fn missing_field_points_at_the_mapping() {
    let docs = parse("x: 1\n---\nport: 8\n");
    let err = decode::<Spec>(&docs[1], "spec").expect_err("no prefix");
    assert_eq!((err.line, err.path.as_str()), (3, "spec"));
    assert!(err.message.contains("`prefix`"), "{}", err.message);
}

#[test]
fn skipped_keys_are_not_unknown_fields() {
    let docs = parse("kind: Mapping\nname: m\nprefix: /a\n");
    let spec: Spec = decode_skipping(&docs[0], "", &["kind", "name"]).expect("decodes");
    assert_eq!(spec.prefix, "/a");
}

#[test]
fn syntax_errors_have_positions() {
    let err = parse_documents(b"a: 1\nb: [1, 2\nc: 3\n", &Limits::default()).expect_err("bad");
    assert!(err.line >= 2, "{err}");
}

#[test]
fn non_utf8_is_reported_at_the_bad_byte() {
    let err = parse_documents(b"a: 1\nb: \xff\xfe\n", &Limits::default()).expect_err("bad");
    assert_eq!((err.line, err.column), (2, 4));
    assert!(err.message.contains("UTF-8"));
}

#[test]
fn limits_stop_alias_bombs_and_deep_nesting() {
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    let limits = Limits {
        max_nodes: 100_000,
        ..Limits::default()
    };
    assert!(parse_documents(bomb.as_bytes(), &limits).is_err());

    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let err = parse_documents(deep.as_bytes(), &Limits::default()).expect_err("too deep");
    assert!(!err.message.is_empty());

    let big = vec![b'#'; 100];
    let limits = Limits {
        max_file_bytes: 10,
        ..Limits::default()
    };
    let err = parse_documents(&big, &limits).expect_err("too big");
    assert!(err.message.contains("over the limit"));
}
