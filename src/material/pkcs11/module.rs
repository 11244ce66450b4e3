//! Loading PKCS#11 libraries: each is loaded and `C_Initialize`d once per process and kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};

use super::Pkcs11Error;
use super::error::ckr_name;

/// Loaded modules by path. A module is never finalized: `C_Finalize` would end the sessions of
/// every token pool of that module in this process, and a library cannot be initialised twice.
static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// The loaded and initialised PKCS#11 library at `path` (blocking: `dlopen` and
/// `C_Initialize` on first use). Tests use it to reach the same library instance as keyfleet.
pub fn load_module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut modules = modules.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(loaded) = modules.get(path) {
        return Ok(loaded.clone());
    }
    let not_loadable = |detail: String| Pkcs11Error::ModuleNotLoadable {
        module: path.display().to_string(),
        detail,
    };
    if !path.is_absolute() {
        return Err(not_loadable(
            "the module path must be absolute (a library inside the operator's container)"
                .to_string(),
        ));
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| not_loadable(e.to_string()))?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(CryptokiError::Pkcs11(rv, _)) => {
            return Err(not_loadable(format!(
                "C_Initialize returned {}",
                ckr_name(rv)
            )));
        }
        Err(e) => return Err(not_loadable(format!("C_Initialize failed: {e}"))),
    }
    modules.insert(path.to_path_buf(), pkcs11.clone());
    Ok(pkcs11)
}
