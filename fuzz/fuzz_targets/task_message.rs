//! The task-message decoder on arbitrary bytes; a message that decodes must
//! encode and decode to itself.
#![no_main]

use iom::task::TaskMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = TaskMessage::decode(data) else {
        return;
    };
    let bytes = m.encode();
    match TaskMessage::decode(&bytes) {
        Ok(again) => assert_eq!(again, m, "round trip changed the message"),
        Err(e) => panic!("re-encoded message does not decode: {e}"),
    }
});
