//! The `wgsd` command line: one module per subcommand.

pub mod bench;
pub mod convert;
pub mod generate;
pub mod info;
pub mod serve;
pub mod signals;
pub mod studio;
pub mod tokenize;
