//! A component of the wrong world (a calculator). wisp must refuse to load it,
//! naming the missing `wisp:policy/decisions@0.4.0` export.

wit_bindgen::generate!({
    path: "wit",
    world: "calc",
});

struct Calc;

impl exports::hostile::other::calculator::Guest for Calc {
    fn add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
}

export!(Calc);
