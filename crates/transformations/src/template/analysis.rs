//! What a template reads, from MiniJinja's own parse tree: the tree its compile builds (shown
//! to us through `with_parse_tree_visitor`), so a template is parsed once.
//!
//! - **Names.** A JSON body is converted only for the top-level keys a template can look up,
//!   so the set of names must never miss one. MiniJinja's `undeclared_variables` is built for
//!   another question (what must the caller provide?) and skips some places a name can stand,
//!   such as the target of a slice (`{{ text[2:] }}`). This walk visits every expression of the
//!   tree instead and keeps every variable it meets, assigned or not: a superset, which only
//!   costs the conversion of a key that a loop variable happens to share.
//! - **Headers.** `header("x")` and `request_header("x")` called with one string literal read
//!   that header; any other use of either name (a computed argument, the function passed
//!   around) reads them all. `get_cookie`/`get_cookie_i` read `cookie`, `query_param` `:path`.
//! - **Other templates.** `include`, `import` and `extends` may read the whole context: the
//!   compiler then converts the whole JSON body (as for `context()` and `debug()`).
//! - **Our functions.** Their calls are handed to [`super::extensions::analyse_call`].

use std::collections::{BTreeSet, HashSet};

use minijinja::machinery::{WhitespaceConfig, ast, find_undeclared, parse};
use minijinja::syntax::SyntaxConfig;

use super::extensions::{self, CallFact};
use super::usage::HeaderNeeds;

/// What one parse of a template tells.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    /// Every variable name the code refers to anywhere.
    pub referenced: BTreeSet<String>,
    /// What MiniJinja's `Template::undeclared_variables(false)` answers (kgateway's module asks
    /// it before rendering), from the same tree.
    pub undeclared: HashSet<String>,
    /// Headers `header()` reads.
    pub header_fn: HeaderNeeds,
    /// Headers `request_header()` (and the functions reading request headers) read.
    pub request_header_fn: HeaderNeeds,
    /// `include`, `import` or `extends`: another template, which may read anything.
    pub pulls_in_templates: bool,
    /// What the calls of our own functions tell, in order.
    pub extension_calls: Vec<CallFact>,
}

/// The analysis of `source`; `None` when it does not parse.
pub(crate) fn of_source(source: &str) -> Option<Analysis> {
    let tree = parse(source, "<names>", SyntaxConfig, WhitespaceConfig::default()).ok()?;
    Some(of_tree(&tree))
}

/// The analysis of a parsed template.
pub(crate) fn of_tree(tree: &ast::Stmt<'_>) -> Analysis {
    let mut walk = Analysis::default();
    walk.statement(tree);
    walk.undeclared = find_undeclared(tree, false);
    walk
}

/// Every variable name `source` refers to anywhere; `None` when it does not parse.
#[cfg(test)]
fn referenced_names(source: &str) -> Option<BTreeSet<String>> {
    of_source(source).map(|n| n.referenced)
}

impl Analysis {
    /// A name read as a variable, not called: a header function met this way may be called
    /// with any name later, so it reads every header.
    fn variable(&mut self, name: &str) {
        match name {
            "header" => self.header_fn.set_all(),
            "request_header" => self.request_header_fn.set_all(),
            _ => self.function_reads(name),
        }
        self.referenced.insert(name.to_owned());
    }

    /// The headers `function` reads whatever its arguments.
    fn function_reads(&mut self, function: &str) {
        match function {
            "get_cookie" | "get_cookie_i" => self.request_header_fn.add("cookie"),
            _ => {
                if let Some(name) = extensions::request_header_read(function) {
                    self.request_header_fn.add(name);
                }
            }
        }
    }

    /// A call of the variable `function` with `args`.
    fn function_call(&mut self, function: &str, args: &[ast::CallArg<'_>]) {
        let needs = match function {
            "header" => Some(&mut self.header_fn),
            "request_header" => Some(&mut self.request_header_fn),
            _ => None,
        };
        if let Some(needs) = needs {
            match args {
                [ast::CallArg::Pos(ast::Expr::Const(name))] if name.value.as_str().is_some() => {
                    needs.add(name.value.as_str().unwrap_or_default())
                }
                _ => needs.set_all(),
            }
        } else {
            self.function_reads(function);
            if extensions::NAMES.contains(&function) {
                extensions::analyse_call(function, args, &mut self.extension_calls);
            }
        }
        self.referenced.insert(function.to_owned());
    }

    fn statements(&mut self, body: &[ast::Stmt<'_>]) {
        body.iter().for_each(|s| self.statement(s));
    }

    fn statement(&mut self, stmt: &ast::Stmt<'_>) {
        match stmt {
            ast::Stmt::Template(t) => self.statements(&t.children),
            ast::Stmt::EmitExpr(e) => self.expression(&e.expr),
            ast::Stmt::EmitRaw(_) => {}
            ast::Stmt::ForLoop(f) => {
                self.expression(&f.iter);
                if let Some(filter) = &f.filter_expr {
                    self.expression(filter);
                }
                self.statements(&f.body);
                self.statements(&f.else_body);
            }
            ast::Stmt::IfCond(i) => {
                self.expression(&i.expr);
                self.statements(&i.true_body);
                self.statements(&i.false_body);
            }
            ast::Stmt::WithBlock(w) => {
                w.assignments.iter().for_each(|(_, e)| self.expression(e));
                self.statements(&w.body);
            }
            ast::Stmt::Set(s) => self.expression(&s.expr),
            ast::Stmt::SetBlock(s) => {
                if let Some(filter) = &s.filter {
                    self.expression(filter);
                }
                self.statements(&s.body);
            }
            ast::Stmt::AutoEscape(a) => {
                self.expression(&a.enabled);
                self.statements(&a.body);
            }
            ast::Stmt::FilterBlock(f) => {
                self.expression(&f.filter);
                self.statements(&f.body);
            }
            ast::Stmt::Block(b) => self.statements(&b.body),
            ast::Stmt::Import(i) => {
                self.pulls_in_templates = true;
                self.expression(&i.expr);
            }
            ast::Stmt::FromImport(i) => {
                self.pulls_in_templates = true;
                self.expression(&i.expr);
            }
            ast::Stmt::Extends(e) => {
                self.pulls_in_templates = true;
                self.expression(&e.name);
            }
            ast::Stmt::Include(i) => {
                self.pulls_in_templates = true;
                self.expression(&i.name);
            }
            ast::Stmt::Macro(m) => self.macro_body(m),
            ast::Stmt::CallBlock(c) => {
                self.call(&c.call);
                self.macro_body(&c.macro_decl);
            }
            ast::Stmt::Do(d) => self.call(&d.call),
        }
    }

    fn macro_body(&mut self, m: &ast::Macro<'_>) {
        m.defaults.iter().for_each(|e| self.expression(e));
        self.statements(&m.body);
    }

    fn call(&mut self, c: &ast::Call<'_>) {
        match &c.expr {
            ast::Expr::Var(v) => self.function_call(v.id, &c.args),
            callee => self.expression(callee),
        }
        self.arguments(&c.args);
    }

    fn arguments(&mut self, args: &[ast::CallArg<'_>]) {
        for arg in args {
            match arg {
                ast::CallArg::Pos(e)
                | ast::CallArg::Kwarg(_, e)
                | ast::CallArg::PosSplat(e)
                | ast::CallArg::KwargSplat(e) => self.expression(e),
            }
        }
    }

    fn expression(&mut self, expr: &ast::Expr<'_>) {
        match expr {
            ast::Expr::Var(v) => self.variable(v.id),
            ast::Expr::Const(_) => {}
            ast::Expr::Slice(s) => {
                self.expression(&s.expr);
                self.optional(&s.start);
                self.optional(&s.stop);
                self.optional(&s.step);
            }
            ast::Expr::UnaryOp(u) => self.expression(&u.expr),
            ast::Expr::BinOp(b) => {
                self.expression(&b.left);
                self.expression(&b.right);
            }
            ast::Expr::IfExpr(i) => {
                self.expression(&i.test_expr);
                self.expression(&i.true_expr);
                self.optional(&i.false_expr);
            }
            ast::Expr::Filter(f) => {
                self.optional(&f.expr);
                self.arguments(&f.args);
            }
            ast::Expr::Test(t) => {
                self.expression(&t.expr);
                self.arguments(&t.args);
            }
            ast::Expr::GetAttr(g) => self.expression(&g.expr),
            ast::Expr::GetItem(g) => {
                self.expression(&g.expr);
                self.expression(&g.subscript_expr);
            }
            ast::Expr::Call(c) => self.call(c),
            ast::Expr::List(l) => l.items.iter().for_each(|e| self.expression(e)),
            ast::Expr::Map(m) => m
                .keys
                .iter()
                .chain(&m.values)
                .for_each(|e| self.expression(e)),
        }
    }

    fn optional(&mut self, e: &Option<ast::Expr<'_>>) {
        if let Some(e) = e {
            self.expression(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::referenced_names;

    fn names(source: &str) -> Vec<String> {
        referenced_names(source)
            .expect("parses")
            .into_iter()
            .collect()
    }

    #[test]
    fn a_name_used_only_as_a_slice_target_is_referenced() {
        assert_eq!(names("{{ text[2:] }}"), ["text"]);
        assert_eq!(names("<{{ model[:3] }}>"), ["model"]);
        assert_eq!(names("{{ (text[-3:])|upper }}"), ["text"]);
        assert_eq!(names("{{ nested.s[1:] }}"), ["nested"]);
    }

    #[test]
    fn names_inside_every_construct_are_referenced() {
        let source = "{% for x in a if b %}{{ x[c] }}{% else %}{{ d }}{% endfor %}\
                      {% if e %}{% set y = f %}{% endif %}{% with w = g %}{{ w }}{% endwith %}\
                      {% macro m(p=h) %}{{ i }}{% endmacro %}{{ m(j, k=l) }}\
                      {% filter upper %}{{ n|default(o) }}{% endfilter %}\
                      {{ q is divisibleby(r) }}{{ [s, {t: u}] }}{{ v if z else aa }}";
        let got = names(source);
        for name in [
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "l", "m", "n", "o", "q", "r", "s",
            "t", "u", "v", "z", "aa",
        ] {
            assert!(got.iter().any(|g| g == name), "{name} missing from {got:?}");
        }
    }

    #[test]
    fn a_template_that_does_not_parse_has_no_names() {
        assert!(referenced_names("{{ x").is_none());
    }

    #[test]
    fn undeclared_is_what_minijinja_answers() {
        let env = minijinja::Environment::new();
        for source in [
            "{{ text[2:] }}",
            "{% set a = b %}{{ a }}{{ c.d }}",
            "{% for x in xs %}{{ x }}{{ y }}{% endfor %}",
            "{{ f(g) }}",
        ] {
            let want = env
                .template_from_str(source)
                .unwrap()
                .undeclared_variables(false);
            assert_eq!(
                super::of_source(source).unwrap().undeclared,
                want,
                "{source}"
            );
        }
    }

    #[test]
    fn call_analysis() {
        let analysis = super::of_source(
            r#"{{ header("X-A") ~ request_header('b') ~ x.header(1) ~ y|foo(2) ~ z is bar(3) ~ f() }}"#,
        )
        .unwrap();
        for called in ["f", "header", "request_header"] {
            assert!(analysis.referenced.contains(called), "{called}");
        }
        assert_eq!(analysis.header_fn.names().collect::<Vec<_>>(), vec!["x-a"]);
        assert_eq!(
            analysis.request_header_fn.names().collect::<Vec<_>>(),
            vec!["b"]
        );

        let analysis =
            super::of_source(r#"{{ header(name) }}{{ request_header("a" ~ b) }}"#).unwrap();
        assert!(analysis.header_fn.all());
        assert!(analysis.request_header_fn.all());
    }

    #[test]
    fn a_header_function_used_other_than_by_a_call_reads_every_header() {
        let analysis = super::of_source("{% set f = header %}{{ f('a') }}").unwrap();
        assert!(analysis.header_fn.all());
        assert!(!analysis.request_header_fn.all());
    }

    #[test]
    fn cookie_and_query_functions_read_their_request_headers() {
        let analysis =
            super::of_source("{{ get_cookie(n) }}{{ query_param('q') }}{{ x.query_param() }}")
                .unwrap();
        assert_eq!(
            analysis.request_header_fn.names().collect::<Vec<_>>(),
            vec![":path", "cookie"]
        );
    }

    #[test]
    fn a_template_pulled_in_is_seen_only_as_a_statement() {
        for source in [
            "{% include 'a' %}",
            "{% import 'a' as m %}",
            "{% from 'a' import m %}",
            "{% extends 'a' %}",
        ] {
            assert!(
                super::of_source(source).unwrap().pulls_in_templates,
                "{source}"
            );
        }
        for source in ["{{ include }}", "include extends import", "{# include #}"] {
            assert!(
                !super::of_source(source).unwrap().pulls_in_templates,
                "{source}"
            );
        }
    }
}
