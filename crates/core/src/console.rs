//! The web interface's query console (`/ui/console`): SQL typed into a form, run as
//! reads (at a chosen consistency) or as writes (through the leader), each statement's
//! result shown as a table. Plain forms, rendered on the server: it works without
//! JavaScript and under the interface's content security policy.
//!
//! Reads and writes are two routes, so the route table says what each needs: the
//! `query` permission to read, `execute` to write.

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use sqlraft::{Consistency, NodeError, Rows, Statement, Value, WriteRequest};

use crate::auth::Perm;
use crate::routes::{Access, Routes, Verb};
use crate::sessions::WebSession;
use crate::state::AppState;
use crate::web::{csrf_input, escape, html, render_shell, signed_in};

/// Largest console form: the SQL typed in.
const MAX_CONSOLE_BYTES: usize = crate::sessions::MAX_LARGE_FORM_BYTES;
/// Statements one run takes.
const MAX_STATEMENTS: usize = 1000;
/// Rows shown of one result; the rest are counted.
const SHOWN_ROWS: usize = 1000;
/// Characters shown of one value.
const SHOWN_CHARS: usize = 2000;

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .add(
            Verb::Get,
            "/ui/console",
            Access::Web(&[Perm::Query]),
            console_page,
        )
        .add(
            Verb::Post,
            "/ui/console/query",
            Access::Web(&[Perm::Query]),
            run_query,
        )
        .add(
            Verb::Post,
            "/ui/console/execute",
            Access::Web(&[Perm::Execute]),
            run_execute,
        )
        .map(|router| router.layer(DefaultBodyLimit::max(MAX_CONSOLE_BYTES)))
}

#[derive(Debug, Deserialize, Default)]
struct ConsoleForm {
    #[serde(default)]
    sql: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    transaction: Option<String>,
}

/// A read's consistency as the form names it.
fn consistency(level: &str) -> Consistency {
    match level {
        "linearizable" => Consistency::Linearizable,
        "strong" => Consistency::Strong,
        _ => Consistency::Local { min_index: None },
    }
}

/// What one statement gave.
enum Outcome {
    Rows(Rows),
    /// A write's RETURNING rows, some left out (over the request's budget).
    Returned(Rows, u64),
    Written {
        rows_affected: u64,
        last_insert_id: i64,
    },
    Error(String),
}

async fn console_page(
    State(_state): State<AppState>,
    session: Option<Extension<WebSession>>,
) -> Response {
    let (user, csrf) = signed_in(session.as_deref());
    let form = ConsoleForm {
        level: "none".into(),
        ..Default::default()
    };
    html(
        StatusCode::OK,
        render_console(&form, user.as_deref(), &csrf, None),
    )
}

/// A posted run: who runs it, the form, and its statements; or the page that refuses
/// it (an unreadable form, too many statements).
struct Run {
    user: Option<String>,
    csrf: String,
    form: ConsoleForm,
    statements: Vec<String>,
}

fn take_run(
    session: Option<&WebSession>,
    form: Result<Form<ConsoleForm>, FormRejection>,
) -> Result<Run, Box<Response>> {
    let (user, csrf) = signed_in(session);
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => return Err(Box::new(refused(&e, user.as_deref(), &csrf))),
    };
    let statements = sqlraft::sql_text::split_statements(&form.sql);
    if statements.len() > MAX_STATEMENTS {
        return Err(Box::new(too_many(
            &form,
            user.as_deref(),
            &csrf,
            statements.len(),
        )));
    }
    Ok(Run {
        user,
        csrf,
        form,
        statements,
    })
}

async fn run_query(
    State(state): State<AppState>,
    session: Option<Extension<WebSession>>,
    form: Result<Form<ConsoleForm>, FormRejection>,
) -> Response {
    let Run {
        user,
        csrf,
        form,
        statements,
    } = match take_run(session.as_deref(), form) {
        Ok(run) => run,
        Err(page) => return *page,
    };
    let mut results = Vec::with_capacity(statements.len());
    let mut level = consistency(&form.level);
    // The reads of one run share the data API's budget for one request.
    let budget = state.options.max_result_bytes;
    let mut spent = 0usize;
    for sql in statements {
        if spent > budget {
            results.push((
                sql,
                Outcome::Error(format!(
                    "not run: the results above are larger than {budget} bytes together"
                )),
            ));
            continue;
        }
        let outcome = match state.node.query(&Statement::new(sql.clone()), level).await {
            Ok(rows) => {
                spent += rows.json_cost(sqlraft::JsonShape::default());
                if spent > budget {
                    Outcome::Error(format!(
                        "the results of this run are larger than {budget} bytes: select fewer rows"
                    ))
                } else {
                    Outcome::Rows(rows)
                }
            }
            Err(e) => Outcome::Error(read_error(&e)),
        };
        results.push((sql, outcome));
        // Later reads see at least what the first one did, on this node's copy.
        level = Consistency::Local { min_index: None };
    }
    let summary = format!(
        "Read on {} ({}).",
        sqlraft::naming::service_name(
            state.node.service_id(),
            sqlraft::naming::host_of(state.node.raft_addr())
        ),
        match form.level.as_str() {
            "linearizable" => "linearizable: as fresh as the leader's commit",
            "strong" => "strong: through the leader's log",
            _ => "none: this node's copy as it is",
        }
    );
    html(
        StatusCode::OK,
        render_console(&form, user.as_deref(), &csrf, Some((&summary, &results))),
    )
}

fn read_error(e: &NodeError) -> String {
    match e {
        NodeError::Query(sqlraft::SqliteError::WriteInRead(_)) => {
            format!("{e} (run it with \"Run as a write\")")
        }
        other => other.to_string(),
    }
}

async fn run_execute(
    State(state): State<AppState>,
    session: Option<Extension<WebSession>>,
    form: Result<Form<ConsoleForm>, FormRejection>,
) -> Response {
    let Run {
        user,
        csrf,
        form,
        statements,
    } = match take_run(session.as_deref(), form) {
        Ok(run) => run,
        Err(page) => return *page,
    };
    let transaction = form.transaction.is_some();
    let (summary, results) = if statements.is_empty() {
        ("Nothing to run.".to_string(), Vec::new())
    } else {
        let request = WriteRequest {
            statements: statements.iter().cloned().map(Statement::new).collect(),
            transaction,
            request_id: None,
            parts: Vec::new(),
        };
        match state.node.execute(request).await {
            Ok(outcome) => {
                let failed = outcome.results.iter().any(|r| r.error.is_some());
                let nothing = outcome.results.iter().all(|r| r.error.is_some());
                // Without `transaction`, every statement has a result unless the
                // request failed whole (its one result is for all of them: found by a
                // review, shown under the first statement and summed up as written).
                let failed_whole = !transaction && outcome.results.len() < statements.len();
                let statements = if failed_whole {
                    vec![format!("(all {} statements)", statements.len())]
                } else {
                    statements
                };
                let results: Vec<(String, Outcome)> = statements
                    .into_iter()
                    .zip(outcome.results)
                    .map(|(sql, r)| {
                        let outcome = match (r.error, r.rows) {
                            (Some(error), _) => Outcome::Error(error),
                            (None, Some(rows)) => Outcome::Returned(rows, r.rows_omitted),
                            (None, None) => Outcome::Written {
                                rows_affected: r.rows_affected,
                                last_insert_id: r.last_insert_id,
                            },
                        };
                        (sql, outcome)
                    })
                    .collect();
                let summary = if failed && (transaction || failed_whole || nothing) {
                    format!(
                        "Nothing written: the {} failed (raft index {}).",
                        if transaction {
                            "transaction"
                        } else {
                            "request"
                        },
                        outcome.raft_index
                    )
                } else {
                    format!(
                        "Written through the leader at raft index {}{}.",
                        outcome.raft_index,
                        if transaction {
                            ", as one transaction"
                        } else {
                            ""
                        }
                    )
                };
                (summary, results)
            }
            Err(e) => (format!("Not written: {e}"), Vec::new()),
        }
    };
    html(
        StatusCode::OK,
        render_console(&form, user.as_deref(), &csrf, Some((&summary, &results))),
    )
}

fn too_many(form: &ConsoleForm, user: Option<&str>, csrf: &str, count: usize) -> Response {
    let message = format!(
        "{count} statements: the console runs at most {MAX_STATEMENTS} at once; send more to /db/execute or /db/load"
    );
    html(
        StatusCode::BAD_REQUEST,
        render_console(
            form,
            user,
            csrf,
            Some((&message, &[] as &[(String, Outcome)])),
        ),
    )
}

fn refused(e: &FormRejection, user: Option<&str>, csrf: &str) -> Response {
    let message = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        format!(
            "The SQL is larger than the console takes ({} KiB); send it to /db/execute or /db/load.",
            MAX_CONSOLE_BYTES >> 10
        )
    } else {
        format!("The form could not be read: {}", e.body_text())
    };
    let form = ConsoleForm::default();
    html(
        e.status(),
        render_console(
            &form,
            user,
            csrf,
            Some((&message, &[] as &[(String, Outcome)])),
        ),
    )
}

fn render_console(
    form: &ConsoleForm,
    user: Option<&str>,
    csrf: &str,
    ran: Option<(&str, &[(String, Outcome)])>,
) -> String {
    let mut body = String::new();
    body.push_str(
        "<header><h1>Query console</h1><p class=\"subtitle\">Run SQL against this core service: \
         reads from its own SQLite copy, writes through the leader to every service. \
         <a href=\"/\">Back to the cluster</a></p></header>\n",
    );
    if let Some(user) = user {
        body.push_str(&format!(
            "<p class=\"hint\">Signed in as <strong>{}</strong>.</p>\n",
            escape(user)
        ));
    }
    let option = |value: &str, label: &str| {
        format!(
            "<option value=\"{value}\"{}>{label}</option>",
            if form.level == value { " selected" } else { "" }
        )
    };
    body.push_str(&format!(
        "<section id=\"console\">\n<form method=\"post\" action=\"/ui/console/query\" id=\"console-form\" class=\"console\">\n{token}\
         <label for=\"sql\">SQL</label>\n\
         <textarea id=\"sql\" name=\"sql\" rows=\"6\" spellcheck=\"false\" placeholder=\"SELECT * FROM sqlite_schema\">{sql}</textarea>\n\
         <label for=\"level\">Read consistency</label>\n\
         <select id=\"level\" name=\"level\">{none}{linearizable}{strong}</select>\n\
         <label for=\"transaction\">Writes</label>\n\
         <span><input type=\"checkbox\" id=\"transaction\" name=\"transaction\" value=\"on\"{checked}> \
         <label for=\"transaction\" class=\"inline\">as one transaction</label></span>\n\
         <span></span><span class=\"buttons\">\
         <button type=\"submit\" id=\"run-query\">Run as a read</button> \
         <button type=\"submit\" id=\"run-execute\" formaction=\"/ui/console/execute\" class=\"secondary\">Run as a write</button></span>\n\
         </form>\n<p class=\"hint\">Statements are separated by <code>;</code>. A read refuses a statement that writes.</p>\n</section>\n",
        token = csrf_input(csrf),
        sql = escape(&form.sql),
        none = option("none", "none: this node's copy"),
        linearizable = option("linearizable", "linearizable"),
        strong = option("strong", "strong"),
        checked = if form.transaction.is_some() { " checked" } else { "" },
    ));
    if let Some((summary, results)) = ran {
        body.push_str("<section id=\"results\" aria-live=\"polite\">\n");
        body.push_str(&format!(
            "<p class=\"summary\" id=\"summary\">{}</p>\n",
            escape(summary)
        ));
        for (i, (sql, outcome)) in results.iter().enumerate() {
            body.push_str(&format!(
                "<div class=\"result\" id=\"result-{i}\">\n<pre>{}</pre>\n",
                escape(sql)
            ));
            match outcome {
                Outcome::Error(e) => body.push_str(&format!(
                    "<p class=\"error\" role=\"alert\">{}</p>\n",
                    escape(e)
                )),
                Outcome::Written {
                    rows_affected,
                    last_insert_id,
                } => body.push_str(&format!(
                    "<p class=\"notice\">{rows_affected} row(s) changed; last inserted rowid {last_insert_id}.</p>\n"
                )),
                Outcome::Rows(rows) => body.push_str(&render_rows(rows)),
                Outcome::Returned(rows, omitted) => {
                    body.push_str(&render_rows(rows));
                    if *omitted > 0 {
                        body.push_str(&format!(
                            "<p class=\"hint\">{omitted} more rows were written and not returned: the rows of one request are bounded.</p>\n"
                        ));
                    }
                }
            }
            body.push_str("</div>\n");
        }
        body.push_str("</section>\n");
    }
    render_shell("Query console", &body)
}

fn render_rows(rows: &Rows) -> String {
    let mut out = String::from("<div class=\"scroll\"><table class=\"rows\">\n<thead><tr>");
    for (name, ty) in rows.columns.iter().zip(&rows.types) {
        out.push_str(&format!(
            "<th>{}<span class=\"type\">{}</span></th>",
            escape(name),
            escape(ty)
        ));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows.values.iter().take(SHOWN_ROWS) {
        out.push_str("<tr>");
        for value in row {
            out.push_str(&render_value(value));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
    let count = rows.values.len();
    out.push_str(&if count > SHOWN_ROWS {
        format!("<p class=\"hint\">{SHOWN_ROWS} of {count} rows shown.</p>\n")
    } else {
        format!(
            "<p class=\"hint\">{count} row{}.</p>\n",
            if count == 1 { "" } else { "s" }
        )
    });
    out
}

fn render_value(value: &Value) -> String {
    let clipped = |text: &str| -> String {
        let mut shown: String = text.chars().take(SHOWN_CHARS).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        escape(&shown)
    };
    match value {
        Value::Null => "<td class=\"null\">NULL</td>".into(),
        Value::Integer(i) => format!("<td class=\"number\">{i}</td>"),
        Value::Real(r) => format!("<td class=\"number\">{r:?}</td>"),
        Value::Text(t) => format!("<td>{}</td>", clipped(t)),
        Value::Blob(b) => {
            let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
            format!(
                "<td class=\"blob\">x'{}' <span class=\"type\">{} bytes</span></td>",
                clipped(&hex),
                b.len()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_names_are_escaped_and_clipped() {
        let rows = Rows {
            columns: vec!["<b>".into(), "n".into()],
            types: vec!["text".into(), "".into()],
            values: vec![
                vec![Value::Text("<script>x</script>".into()), Value::Null],
                vec![
                    Value::Text("é".repeat(SHOWN_CHARS + 5)),
                    Value::Blob(vec![0, 255]),
                ],
            ],
        };
        let html = render_rows(&rows);
        assert!(html.contains("&lt;b&gt;"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("<td class=\"null\">NULL</td>"), "{html}");
        assert!(html.contains("x'00ff'"), "{html}");
        assert!(html.contains('…'), "{html}");
        assert!(html.contains("2 rows."), "{html}");
    }

    #[test]
    fn the_form_keeps_what_was_typed_escaped() {
        let form = ConsoleForm {
            sql: "SELECT '</textarea><script>'".into(),
            level: "strong".into(),
            transaction: Some("on".into()),
        };
        let page = render_console(&form, Some("<u>"), "tok", None);
        assert!(!page.contains("</textarea><script>"), "{page}");
        assert!(
            page.contains("<option value=\"strong\" selected>"),
            "{page}"
        );
        assert!(page.contains(" checked>"), "{page}");
        assert!(page.contains("name=\"csrf\" value=\"tok\""), "{page}");
        assert!(page.contains("&lt;u&gt;"), "{page}");
    }
}
