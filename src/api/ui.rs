//! The web console at `/ui/` (docs/console.md): three static files compiled
//! into the binary, served by every node. The page itself reads `/status`
//! and `/cluster/nodes` of the node that served it, with the token the user
//! types in; this module serves no data.
//!
//! The files are public (no token needed: they hold no data, and the page
//! must load to ask for the token). Every answer carries a strict
//! Content-Security-Policy: scripts, styles, images and requests from this
//! node only, no inline script or style, no framing, so an event body shown
//! in the page cannot run as script even if some code path rendered it as
//! markup (the page only ever sets `textContent`).

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use super::Shared;

/// The console's URL prefix; `/ui` redirects to `/ui/`.
pub const PREFIX: &str = "/ui";

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'none'; object-src 'none'";

/// (file name, content type, bytes). `index.html` is also served at `/ui/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../assets/ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/ui/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../assets/ui/app.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../assets/ui/favicon.svg")),
];

/// Whether `path` is a console file, served without the API token.
pub fn is_public(path: &str) -> bool {
    path == PREFIX || path.strip_prefix(PREFIX).is_some_and(|rest| rest.starts_with('/'))
}

/// The console's routes, merged into the public router.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route("/ui/{file}", get(|Path(file): Path<String>| async move { asset(&file) }))
}

fn asset(name: &str) -> Response {
    let Some(&(_, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::NotFound.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // For browsers that predate frame-ancestors.
            (header::X_FRAME_OPTIONS, "DENY"),
            // Revalidate: after an upgrade the node serves the new page.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_console_prefix_is_public() {
        assert!(is_public("/ui"));
        assert!(is_public("/ui/"));
        assert!(is_public("/ui/app.js"));
        assert!(!is_public("/uix"));
        assert!(!is_public("/ui.json"));
        assert!(!is_public("/status"));
        assert!(!is_public("/queues/ui/event"));
    }

    #[test]
    fn every_asset_carries_the_security_headers() {
        for (name, content_type, _) in ASSETS {
            let response = asset(name);
            assert_eq!(response.status(), 200, "{name}");
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], *content_type, "{name}");
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            for directive in [
                "default-src 'self'",
                "script-src 'self'",
                "style-src 'self'",
                "connect-src 'self'",
                "frame-ancestors 'none'",
            ] {
                assert!(csp.contains(directive), "{name}: {csp}");
            }
            assert!(!csp.contains("unsafe"), "{name}: {csp}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        }
        assert_eq!(asset("../Cargo.toml").status(), 404);
        assert_eq!(asset("missing.js").status(), 404);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        // Every <script> loads a file; no style attributes or blocks.
        for (i, _) in html.match_indices("<script") {
            assert!(html[i..].split('>').next().unwrap().contains("src=\"app.js\""), "{html}");
        }
        assert!(!html.contains("<style"), "inline style block");
        assert!(!html.contains("style="), "inline style attribute");
        let handler = html.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        let js = std::str::from_utf8(ASSETS[1].2).unwrap();
        // Data reaches the DOM through textContent only.
        assert!(!js.contains("innerHTML") && !js.contains("outerHTML"));
        assert!(!js.contains("insertAdjacentHTML") && !js.contains("document.write"));
    }
}
