//! QR codes of access keys, rendered once per key and kept: `GET /users/tickets` shows up to
//! 100 tickets a page and the ticket mail links an image per ticket, so the same keys are
//! drawn again and again. The cache is bounded (cleared when full: keys are cheap to draw
//! again, and a simple bound beats an eviction policy here).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

/// Keys whose drawings are kept (a PNG is ~1–2 KiB: at most a few tens of MiB).
const CAPACITY: usize = 20_000;

static DRAWN: LazyLock<Mutex<HashMap<String, Arc<[u8]>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The PNG of a QR code that encodes exactly `text` (CPU work: call it off the async
/// threads when drawing many).
pub fn png(text: &str) -> Option<Arc<[u8]>> {
    if let Some(hit) = DRAWN.lock().ok().and_then(|m| m.get(text).cloned()) {
        return Some(hit);
    }
    let drawn: Arc<[u8]> = qrcodegen_image::draw_png(text).ok()?.into();
    if let Ok(mut m) = DRAWN.lock() {
        if m.len() >= CAPACITY {
            m.clear();
        }
        m.insert(text.to_owned(), drawn.clone());
    }
    Some(drawn)
}

/// The same PNG, base64 (the `qr_code_png` of a ticket).
pub fn png_base64(text: &str) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    png(text).map(|p| STANDARD.encode(&p)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_drawn_once_and_is_a_png() {
        let first = png("key-for-the-cache-test").unwrap();
        let second = png("key-for-the-cache-test").unwrap();
        assert!(Arc::ptr_eq(&first, &second), "served from the cache");
        assert_eq!(&first[..8], b"\x89PNG\r\n\x1a\n");
    }
}
