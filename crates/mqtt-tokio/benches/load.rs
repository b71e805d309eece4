//! Load benchmark over loopback (to be written).

fn main() {}
