//! Bounded property tests: the report decoder, validator and id parser never panic on any input, and
//! whatever they accept round-trips.

use faultline_proto::{ComponentId, NodeReport};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn report_decoder_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = NodeReport::from_json(&bytes);
    }

    #[test]
    fn report_decoder_never_panics_on_json_like_text(s in r#"\{("[a-z_]{1,12}": ?(-?[0-9]{1,20}(\.[0-9]+)?|"[a-z0-9/:-]{0,10}"|\[\]|\{\}|null|true),? ?){0,12}\}"#) {
        let _ = NodeReport::from_json(s.as_bytes());
    }

    #[test]
    fn component_ids_that_parse_print_back_the_same(s in "[a-z0-9:/_-]{0,40}") {
        if let Ok(id) = s.parse::<ComponentId>() {
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert_eq!(id.to_string().parse::<ComponentId>().unwrap(), id);
        }
    }
}
