//! Detection content compiled into the binary (see build.rs): the yara rules
//! and the indicator file, stored masked so that our own binary does not
//! match miner signatures, and unmasked here on use.

/// Same value as in build.rs.
const MASK: u8 = 0xA5;

fn unmask(bytes: &[u8]) -> String {
    let plain: Vec<u8> = bytes.iter().map(|b| b ^ MASK).collect();
    String::from_utf8_lossy(&plain).into_owned()
}

macro_rules! masked {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".masked"))
    };
}

/// The embedded yara rule files: (file name, source).
pub fn yara_rules() -> Vec<(&'static str, String)> {
    vec![
        ("randomx.yar", unmask(masked!("yara_randomx.yar"))),
        ("xmrig.yar", unmask(masked!("yara_xmrig.yar"))),
        ("miners.yar", unmask(masked!("yara_miners.yar"))),
    ]
}

/// The embedded indicator file (rules/indicators.toml).
pub fn indicators() -> String {
    unmask(masked!("indicators.toml"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn unmasked_content_matches_the_sources() {
        let rules = super::yara_rules();
        let on_disk =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/yara/xmrig.yar"))
                .expect("read rules");
        assert_eq!(rules[1].1, on_disk);
        assert!(super::indicators().contains("[pool]"));
    }
}
