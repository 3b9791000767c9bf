//! Secrets are read from a file only its owner may read, or from an environment variable;
//! never from the configuration file or the command line.

/// Reads a file that holds a secret, refusing it (as ssh refuses a private key) when users
/// other than its owner may read or write it: a secret readable by everyone on the machine is
/// no longer a secret, and saying so at start is cheaper than finding out after a leak. The
/// error names the file and the fix.
pub fn read_private_file(path: &std::path::Path) -> Result<zeroize::Zeroizing<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} holds a secret but is open to other users (mode {:04o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ));
        }
    }
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut &file, &mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

/// A provider's secret, from exactly one of a file and an environment variable.
pub(crate) fn read_secret(
    table: &str,
    what: &str,
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<zeroize::Zeroizing<String>, String> {
    let text = match (file, env) {
        (Some(path), None) => read_private_file(path)
            .map_err(|e| format!("[{table}] {what}_file {e}"))?
            .to_string(),
        (None, Some(name)) => {
            std::env::var(name).map_err(|_| format!("[{table}] {what}_env: ${name} is not set"))?
        }
        _ => {
            return Err(format!(
                "[{table}] set exactly one of {what}_file and {what}_env"
            ))
        }
    };
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}
