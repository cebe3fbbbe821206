//! Compiles the .proto files with protox (pure Rust) so building needs no
//! protoc on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/workload.proto", "proto/hallmark.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // The admin messages serialize to JSON as they are (the console's API
    // answers with them); byte fields (DER, CSRs, bundles) are left out.
    let mut config = tonic_prost_build::configure().type_attribute(
        ".hallmark.v1",
        "#[derive(serde::Serialize)] #[serde(rename_all = \"snake_case\")]",
    );
    for field in [
        "Bundle.x509_authorities",
        "Bundle.jwks",
        "X509Svid.cert_chain",
        "AttestRequest.csr",
        "RenewAgentRequest.csr",
        "SvidRequest.csr",
        "Federation.web_ca_pem",
        "CreateFederationRequest.bootstrap_bundle",
        "Authority.cert_der",
    ] {
        config = config.field_attribute(format!(".hallmark.v1.{field}"), "#[serde(skip)]");
    }
    config
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
