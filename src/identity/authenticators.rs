//! A default name for a new passkey from its authenticator's AAGUID (the model identifier in
//! the attestation's authenticator data), for the well-known passkey providers. Unknown or zero
//! AAGUIDs (many authenticators send zeros without attestation) get no name here.

/// Well-known AAGUIDs (from the community list of passkey providers' AAGUIDs).
const KNOWN: &[(&str, &str)] = &[
    (
        "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",
        "Google Password Manager",
    ),
    ("adce0002-35bc-c60a-648b-0b25f1f05503", "Chrome on Mac"),
    ("08987058-cadc-4b81-b6e1-30de50dcbe96", "Windows Hello"),
    ("9ddd1817-af5a-4672-a2b9-3e3dd95000a9", "Windows Hello"),
    ("6028b017-b1d4-4c02-b4b3-afcdafc96bb2", "Windows Hello"),
    ("fbfc3007-154e-4ecc-8c0b-6e020557d7bd", "iCloud Keychain"),
    ("dd4ec289-e01d-41c9-bb89-70fa845d4bf2", "iCloud Keychain"),
    ("bada5566-a7aa-401f-bd96-45619a55120d", "1Password"),
    ("d548826e-79b4-db40-a3d8-11116f7e8349", "Bitwarden"),
    ("53414d53-554e-4700-0000-000000000000", "Samsung Pass"),
    ("cb69481e-8ff7-4039-93ec-0a2729a154a8", "YubiKey 5"),
    ("ee882879-721c-4913-9775-3dfcce97072a", "YubiKey 5"),
    ("fa2b99dc-9e39-4257-8f92-4a30d23c4118", "YubiKey 5 NFC"),
    ("2fc0579f-8113-47ea-b116-bb5a8db9202a", "YubiKey 5 NFC"),
];

/// The AAGUID of a registration's attestation object (CBOR map with `authData`; the AAGUID is
/// the 16 bytes after rpIdHash(32) | flags(1) | signCount(4), present when attested credential
/// data is, flag 0x40), formatted as a UUID.
pub fn aaguid(attestation_object: &[u8]) -> Option<String> {
    let value: serde_cbor_2::Value = serde_cbor_2::from_slice(attestation_object).ok()?;
    let serde_cbor_2::Value::Map(map) = value else {
        return None;
    };
    let auth_data = map.iter().find_map(|(k, v)| match (k, v) {
        (serde_cbor_2::Value::Text(k), serde_cbor_2::Value::Bytes(b)) if k == "authData" => Some(b),
        _ => None,
    })?;
    if auth_data.len() < 53 || auth_data[32] & 0x40 == 0 {
        return None;
    }
    let a = &auth_data[37..53];
    let hex = crate::keys::kek::hex(a);
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// The provider's name for a known AAGUID.
pub fn name_for(aaguid: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|(id, _)| id.eq_ignore_ascii_case(aaguid))
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attestation(aaguid: [u8; 16], flags: u8) -> Vec<u8> {
        let mut auth = vec![0u8; 32];
        auth.push(flags);
        auth.extend_from_slice(&[0, 0, 0, 1]);
        auth.extend_from_slice(&aaguid);
        auth.extend_from_slice(&[0, 0]);
        let map = std::collections::BTreeMap::from([
            (
                serde_cbor_2::Value::Text("fmt".into()),
                serde_cbor_2::Value::Text("none".into()),
            ),
            (
                serde_cbor_2::Value::Text("authData".into()),
                serde_cbor_2::Value::Bytes(auth),
            ),
        ]);
        serde_cbor_2::to_vec(&serde_cbor_2::Value::Map(map)).expect("cbor")
    }

    #[test]
    fn a_known_aaguid_names_the_provider() {
        let id = [
            0xea, 0x9b, 0x8d, 0x66, 0x4d, 0x01, 0x1d, 0x21, 0x3c, 0xe4, 0xb6, 0xb4, 0x8c, 0xb5,
            0x75, 0xd4,
        ];
        let got = aaguid(&attestation(id, 0x45)).expect("attested data");
        assert_eq!(got, "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4");
        assert_eq!(name_for(&got), Some("Google Password Manager"));
        assert_eq!(
            aaguid(&attestation(id, 0x05)),
            None,
            "no attested data flag"
        );
        assert_eq!(name_for("00000000-0000-0000-0000-000000000000"), None);
        assert_eq!(aaguid(b"not cbor"), None);
    }
}
