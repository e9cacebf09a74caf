//! Tcl quoting round trips and the script parser/validator on arbitrary text:
//! `quote_word(w)` read back as a list is `[w]`, and as a command is `[[w]]`;
//! `quote_list(items)` read back is `items`; `split_list`, `parse_commands` and
//! `validate` never panic.
#![no_main]

use iom::tractor::script::{parse_commands, quote_list, quote_word, split_list, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    // One word.
    let q = quote_word(s);
    match split_list(&q) {
        Ok(words) => assert_eq!(words, vec![s.to_string()], "quote_word({s:?}) = {q:?}"),
        Err(e) => panic!("quote_word({s:?}) = {q:?} does not split: {e}"),
    }
    match parse_commands(&q) {
        Ok(cmds) => assert_eq!(cmds, vec![vec![s.to_string()]], "quote_word({s:?}) = {q:?}"),
        Err(e) => panic!("quote_word({s:?}) = {q:?} does not parse as a command: {e}"),
    }

    // A list: the input cut at NUL bytes into items.
    let items: Vec<&str> = s.split('\0').collect();
    let ql = quote_list(&items);
    match split_list(&ql) {
        Ok(words) => {
            assert_eq!(words.len(), 1, "quote_list({items:?}) = {ql:?}");
            match split_list(&words[0]) {
                Ok(inner) => assert_eq!(inner, items, "quote_list({items:?}) = {ql:?}"),
                Err(e) => panic!("quote_list({items:?}) = {ql:?}: inner list does not split: {e}"),
            }
        }
        Err(e) => panic!("quote_list({items:?}) = {ql:?} does not split: {e}"),
    }

    // Arbitrary text through the readers.
    let _ = split_list(s);
    let _ = parse_commands(s);
    let _ = validate(s);
});
