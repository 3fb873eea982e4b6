//! Local stand-ins for Paystack, Resend and Cloudinary that follow
//! `shared/contracts/external-apis.md`: same paths, envelopes, errors and idempotency rules,
//! plus test-only inspection and fault injection. Each listens on a random port; the app
//! reaches it through its `*_BASE_URL` variable.

pub mod cloudinary;
pub mod paystack;
pub mod resend;

use std::net::SocketAddr;

use axum::Router;

/// Serves `router` on a random local port and returns its base URL.
pub async fn serve(router: Router) -> String {
    let (listener, base_url) = listen().await;
    serve_on(listener, router);
    base_url
}

/// Binds a random local port first, for fakes that must know their own URL.
pub async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    (listener, format!("http://{addr}"))
}

pub fn serve_on(listener: tokio::net::TcpListener, router: Router) {
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
}

/// A fault the next call(s) to a fake will suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 with the provider's JSON error body; nothing happens.
    ServerError,
    /// The provider did the work, then the answer was lost as a 500.
    ServerErrorAfterAccept,
    /// 503 with an HTML gateway page; nothing happens.
    HtmlUnavailable,
    /// 502 with an HTML page from a proxy in front; nothing happens. Only the Paystack fake
    /// honours it.
    BadGatewayHtml,
    /// 429 over the provider's rate limit, with its `x-ratelimit-*` headers (the window ends
    /// in this many seconds); nothing happens. Only the Paystack fake honours it.
    RateLimited(u64),
    /// No answer for this long.
    Hang(std::time::Duration),
    /// The provider did the work, then held the answer this long (past the client's timeout):
    /// "succeeded but the answer was lost". Only the Paystack fake honours it.
    HangAfterAccept(std::time::Duration),
}
