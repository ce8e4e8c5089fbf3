//! The variable names a template's code refers to, read from MiniJinja's own parse tree.
//!
//! A JSON body is converted only for the top-level keys a template can look up, so the set of
//! names must never miss one. MiniJinja's `undeclared_variables` is built for another question
//! (what must the caller provide?) and skips some places a name can stand, such as the target of
//! a slice (`{{ text[2:] }}`). This walk visits every expression of the tree instead and keeps
//! every variable it meets, assigned or not: a superset, which only costs the conversion of a
//! key that a loop variable happens to share.

use std::collections::BTreeSet;

use std::collections::HashSet;

use minijinja::machinery::{WhitespaceConfig, ast, find_undeclared, parse};
use minijinja::syntax::SyntaxConfig;

/// What one parse of a template tells.
pub(crate) struct Names {
    /// Every variable name the code refers to anywhere.
    pub referenced: BTreeSet<String>,
    /// What MiniJinja's `Template::undeclared_variables(false)` answers (kgateway's module asks
    /// it before rendering), from the same tree.
    pub undeclared: HashSet<String>,
}

/// The names of `source`; `None` when it does not parse.
pub(crate) fn analyse(source: &str) -> Option<Names> {
    let tree = parse(source, "<names>", SyntaxConfig, WhitespaceConfig::default()).ok()?;
    Some(of_tree(&tree))
}

/// The names of a parsed template (the compile shows us its tree: no second parse).
pub(crate) fn of_tree(tree: &ast::Stmt<'_>) -> Names {
    let mut referenced = BTreeSet::new();
    statement(tree, &mut referenced);
    Names {
        undeclared: find_undeclared(tree, false),
        referenced,
    }
}

/// Every variable name `source` refers to anywhere; `None` when it does not parse.
#[cfg(test)]
fn referenced_names(source: &str) -> Option<BTreeSet<String>> {
    analyse(source).map(|n| n.referenced)
}

fn statements(body: &[ast::Stmt<'_>], names: &mut BTreeSet<String>) {
    body.iter().for_each(|s| statement(s, names));
}

fn statement(stmt: &ast::Stmt<'_>, names: &mut BTreeSet<String>) {
    match stmt {
        ast::Stmt::Template(t) => statements(&t.children, names),
        ast::Stmt::EmitExpr(e) => expression(&e.expr, names),
        ast::Stmt::EmitRaw(_) => {}
        ast::Stmt::ForLoop(f) => {
            expression(&f.iter, names);
            if let Some(filter) = &f.filter_expr {
                expression(filter, names);
            }
            statements(&f.body, names);
            statements(&f.else_body, names);
        }
        ast::Stmt::IfCond(i) => {
            expression(&i.expr, names);
            statements(&i.true_body, names);
            statements(&i.false_body, names);
        }
        ast::Stmt::WithBlock(w) => {
            w.assignments.iter().for_each(|(_, e)| expression(e, names));
            statements(&w.body, names);
        }
        ast::Stmt::Set(s) => expression(&s.expr, names),
        ast::Stmt::SetBlock(s) => {
            if let Some(filter) = &s.filter {
                expression(filter, names);
            }
            statements(&s.body, names);
        }
        ast::Stmt::AutoEscape(a) => {
            expression(&a.enabled, names);
            statements(&a.body, names);
        }
        ast::Stmt::FilterBlock(f) => {
            expression(&f.filter, names);
            statements(&f.body, names);
        }
        ast::Stmt::Block(b) => statements(&b.body, names),
        ast::Stmt::Import(i) => expression(&i.expr, names),
        ast::Stmt::FromImport(i) => expression(&i.expr, names),
        ast::Stmt::Extends(e) => expression(&e.name, names),
        ast::Stmt::Include(i) => expression(&i.name, names),
        ast::Stmt::Macro(m) => macro_body(m, names),
        ast::Stmt::CallBlock(c) => {
            call(&c.call, names);
            macro_body(&c.macro_decl, names);
        }
        ast::Stmt::Do(d) => call(&d.call, names),
    }
}

fn macro_body(m: &ast::Macro<'_>, names: &mut BTreeSet<String>) {
    m.defaults.iter().for_each(|e| expression(e, names));
    statements(&m.body, names);
}

fn call(c: &ast::Call<'_>, names: &mut BTreeSet<String>) {
    expression(&c.expr, names);
    arguments(&c.args, names);
}

fn arguments(args: &[ast::CallArg<'_>], names: &mut BTreeSet<String>) {
    for arg in args {
        match arg {
            ast::CallArg::Pos(e)
            | ast::CallArg::Kwarg(_, e)
            | ast::CallArg::PosSplat(e)
            | ast::CallArg::KwargSplat(e) => expression(e, names),
        }
    }
}

fn expression(expr: &ast::Expr<'_>, names: &mut BTreeSet<String>) {
    let optional = |e: &Option<ast::Expr<'_>>, names: &mut BTreeSet<String>| {
        if let Some(e) = e {
            expression(e, names);
        }
    };
    match expr {
        ast::Expr::Var(v) => {
            names.insert(v.id.to_owned());
        }
        ast::Expr::Const(_) => {}
        ast::Expr::Slice(s) => {
            expression(&s.expr, names);
            optional(&s.start, names);
            optional(&s.stop, names);
            optional(&s.step, names);
        }
        ast::Expr::UnaryOp(u) => expression(&u.expr, names),
        ast::Expr::BinOp(b) => {
            expression(&b.left, names);
            expression(&b.right, names);
        }
        ast::Expr::IfExpr(i) => {
            expression(&i.test_expr, names);
            expression(&i.true_expr, names);
            optional(&i.false_expr, names);
        }
        ast::Expr::Filter(f) => {
            optional(&f.expr, names);
            arguments(&f.args, names);
        }
        ast::Expr::Test(t) => {
            expression(&t.expr, names);
            arguments(&t.args, names);
        }
        ast::Expr::GetAttr(g) => expression(&g.expr, names),
        ast::Expr::GetItem(g) => {
            expression(&g.expr, names);
            expression(&g.subscript_expr, names);
        }
        ast::Expr::Call(c) => call(c, names),
        ast::Expr::List(l) => l.items.iter().for_each(|e| expression(e, names)),
        ast::Expr::Map(m) => m
            .keys
            .iter()
            .chain(&m.values)
            .for_each(|e| expression(e, names)),
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
            assert_eq!(super::analyse(source).unwrap().undeclared, want, "{source}");
        }
    }
}
