fn main() { eprintln!("wisp: work in progress"); std::process::exit(2); }
