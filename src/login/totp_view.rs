//! How the pages show a new authenticator-app secret: a QR code of the `otpauth://` URI rendered
//! here as SVG (no external service), the secret grouped in fours for typing, and the link.

use minijinja::{Value, context};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use crate::identity::totp;

/// The `otpauth://` URI as an inline SVG QR code (error correction M), or `None` if it does not
/// fit (it always does: the URI is a few hundred bytes).
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M).ok()?;
    let svg = code
        .render::<svg::Color>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    // Inline in the page: drop the XML declaration.
    Some(match svg.find("<svg") {
        Some(i) => svg[i..].to_owned(),
        None => svg,
    })
}

/// `ABCD EFGH ...`: the base32 secret in groups of four.
pub fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The template values of `totp_setup.html`.
pub fn context(secret: &[u8], issuer: &str, account: &str) -> Value {
    let uri = totp::otpauth_url(secret, issuer, account);
    let b32 = totp::secret_base32(secret);
    context! {
        qr_svg => qr_svg(&uri).unwrap_or_default(),
        totp_secret => b32.clone(),
        totp_secret_grouped => grouped(&b32),
        otpauth_url => uri,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_an_inline_svg_and_the_secret_is_grouped() {
        let svg =
            qr_svg("otpauth://totp/Bank:carol?secret=JBSWY3DPEHPK3PXP&issuer=Bank").expect("fits");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(!svg.contains("<script"));
        assert_eq!(grouped("JBSWY3DPEHPK3PXP"), "JBSW Y3DP EHPK 3PXP");
        assert_eq!(grouped("ABCDEF"), "ABCD EF");
    }
}
