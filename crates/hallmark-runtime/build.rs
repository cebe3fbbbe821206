//! Compiles the CRI v1 subset with protox (pure Rust) so building needs no
//! protoc on the machine. The server side is generated too: tests stand in
//! for runtime versions this machine does not run (see tests/cri_fake.rs).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/cri.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
