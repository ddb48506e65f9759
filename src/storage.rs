//! IndexedDB persistence of the personal state (web-sys).
//!
//! One object store, one record: the state's bytes (`PersonalState::to_bytes`). A save runs in one
//! readwrite transaction: read the stored record; if another tab wrote since this one last loaded or
//! saved (the revision moved), merge three-way (`PersonalState::merge`) instead of overwriting; write;
//! and report success only when the transaction has completed, i.e. the data is durable.

use feedloop_core::contribution::{DevicePrivacy, DevicePrivacyState};
use feedloop_core::PersonalState;
use js_sys::{Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbFactory, IdbRequest, IdbTransaction, IdbTransactionMode};

const STORE: &str = "state";
const KEY: &str = "personal";
/// The privacy state (policy, budget, ledger) as JSON, next to the personal state.
const PRIVACY_KEY: &str = "privacy";
const VERSION: u32 = 1;

/// A storage error, as a message for a JS `Error`.
pub type StorageResult<T> = Result<T, String>;

fn factory() -> StorageResult<IdbFactory> {
    let value = Reflect::get(&js_sys::global(), &"indexedDB".into())
        .map_err(|_| "indexedDB is not reachable".to_string())?;
    if value.is_undefined() || value.is_null() {
        return Err("this environment has no indexedDB".into());
    }
    value
        .dyn_into::<IdbFactory>()
        .map_err(|_| "globalThis.indexedDB is not an IDBFactory".into())
}

/// Whether IndexedDB exists here (Node has none; that is not a failure, just no persistence).
pub fn available() -> bool {
    factory().is_ok()
}

fn describe(value: JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    if let Ok(message) = Reflect::get(&value, &"message".into()) {
        if let Some(message) = message.as_string() {
            return message;
        }
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// Resolves with the request's result, or rejects with its error.
async fn request(req: &IdbRequest) -> StorageResult<JsValue> {
    let promise = Promise::new(&mut |resolve, reject| {
        let target = req.clone();
        let on_success = Closure::once_into_js(move || {
            let _ = resolve.call1(
                &JsValue::NULL,
                &target.result().unwrap_or(JsValue::UNDEFINED),
            );
        });
        let target = req.clone();
        let on_error = Closure::once_into_js(move || {
            let error = target
                .error()
                .ok()
                .flatten()
                .map(JsValue::from)
                .unwrap_or_else(|| "request failed".into());
            let _ = reject.call1(&JsValue::NULL, &error);
        });
        req.set_onsuccess(Some(on_success.unchecked_ref()));
        req.set_onerror(Some(on_error.unchecked_ref()));
    });
    JsFuture::from(promise).await.map_err(describe)
}

/// Resolves when the transaction has committed, rejects if it aborts or fails.
async fn committed(tx: &IdbTransaction) -> StorageResult<()> {
    let promise = Promise::new(&mut |resolve, reject| {
        let on_complete = Closure::once_into_js(move || {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let target = tx.clone();
        let on_abort = Closure::once_into_js(move || {
            let error = target
                .error()
                .map(JsValue::from)
                .unwrap_or_else(|| "the transaction was aborted".into());
            let _ = reject.call1(&JsValue::NULL, &error);
        });
        tx.set_oncomplete(Some(on_complete.unchecked_ref()));
        tx.set_onabort(Some(on_abort.unchecked_ref()));
        tx.set_onerror(Some(on_abort.unchecked_ref()));
    });
    JsFuture::from(promise).await.map(|_| ()).map_err(describe)
}

async fn open(name: &str) -> StorageResult<IdbDatabase> {
    let factory = factory()?;
    let req = factory
        .open_with_u32(name, VERSION)
        .map_err(|e| format!("could not open IndexedDB {name:?}: {}", describe(e)))?;
    let target = req.clone();
    let on_upgrade = Closure::once_into_js(move || {
        if let Ok(db) = target.result().and_then(|r| r.dyn_into::<IdbDatabase>()) {
            if !db.object_store_names().contains(STORE) {
                let _ = db.create_object_store(STORE);
            }
        }
    });
    req.set_onupgradeneeded(Some(on_upgrade.unchecked_ref()));
    let db = request(&req)
        .await
        .map_err(|e| format!("could not open IndexedDB {name:?}: {e}"))?;
    db.dyn_into::<IdbDatabase>()
        .map_err(|_| "IndexedDB open did not return a database".into())
}

fn decode(value: &JsValue, parameters: usize) -> StorageResult<Option<PersonalState>> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let bytes = value
        .dyn_ref::<Uint8Array>()
        .ok_or("the stored state is not bytes")?
        .to_vec();
    PersonalState::from_bytes(&bytes, parameters)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The stored state, if any.
pub async fn load(name: &str, parameters: usize) -> StorageResult<Option<PersonalState>> {
    let db = open(name).await?;
    let tx = db
        .transaction_with_str(STORE)
        .map_err(|e| format!("could not read the saved state: {}", describe(e)))?;
    let store = tx.object_store(STORE).map_err(describe)?;
    let value = request(&store.get(&KEY.into()).map_err(describe)?).await?;
    db.close();
    decode(&value, parameters).map_err(|e| format!("could not read the saved state: {e}"))
}

/// Saves `mine`, merging with whatever another tab stored since `base` (the state this tab last
/// loaded or saved). Returns what was written, once it is durable.
pub async fn save(
    name: &str,
    base: &PersonalState,
    mine: &PersonalState,
) -> StorageResult<PersonalState> {
    let parameters = mine.learning.delta.len();
    let db = open(name).await?;
    let tx = db
        .transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)
        .map_err(|e| format!("could not save: {}", describe(e)))?;
    let store = tx.object_store(STORE).map_err(describe)?;
    // Everything from here to the put runs within the transaction (microtasks keep it active).
    let stored = decode(
        &request(&store.get(&KEY.into()).map_err(describe)?).await?,
        parameters,
    );
    let mut written = match stored {
        Ok(Some(stored)) if stored.revision != base.revision => {
            PersonalState::merge(&stored, base, mine)
        }
        Ok(Some(stored)) => PersonalState {
            revision: stored.revision,
            ..mine.clone()
        },
        // Nothing stored, or a record this version cannot read: this tab's state replaces it.
        Ok(None) | Err(_) => mine.clone(),
    };
    written.revision += 1;
    let bytes = Uint8Array::from(written.to_bytes().as_slice());
    store
        .put_with_key(&bytes, &KEY.into())
        .map_err(|e| format!("could not save: {}", describe(e)))?;
    committed(&tx)
        .await
        .map_err(|e| format!("could not save: {e}"))?;
    db.close();
    Ok(written)
}

/// Deletes the stored state.
pub async fn clear(name: &str) -> StorageResult<()> {
    let db = open(name).await?;
    let tx = db
        .transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)
        .map_err(describe)?;
    let store = tx.object_store(STORE).map_err(describe)?;
    store.delete(&KEY.into()).map_err(describe)?;
    store.delete(&PRIVACY_KEY.into()).map_err(describe)?;
    committed(&tx).await?;
    db.close();
    Ok(())
}

/// The stored privacy state, if any. A stored state that does not verify is an error, never ignored:
/// it records spending.
pub async fn load_privacy(name: &str) -> StorageResult<Option<DevicePrivacy>> {
    let db = open(name).await?;
    let tx = db
        .transaction_with_str(STORE)
        .map_err(|e| format!("could not read the privacy state: {}", describe(e)))?;
    let store = tx.object_store(STORE).map_err(describe)?;
    let value = request(&store.get(&PRIVACY_KEY.into()).map_err(describe)?).await?;
    db.close();
    match value.as_string() {
        None => Ok(None),
        Some(json) => DevicePrivacy::from_json(&json)
            .map(Some)
            .map_err(|e| format!("could not read the privacy state: {e}")),
    }
}

/// Saves the privacy state, merged with what other tabs stored (no spend or release is lost);
/// returns what was written, once it is durable.
pub async fn save_privacy(name: &str, mine: &DevicePrivacy) -> StorageResult<DevicePrivacy> {
    let db = open(name).await?;
    let tx = db
        .transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)
        .map_err(|e| format!("could not save the privacy state: {}", describe(e)))?;
    let store = tx.object_store(STORE).map_err(describe)?;
    let stored = request(&store.get(&PRIVACY_KEY.into()).map_err(describe)?).await?;
    let written = match stored.as_string() {
        None => mine.clone(),
        Some(json) => {
            let stored = DevicePrivacy::from_json(&json).map_err(|e| {
                format!("the stored privacy state does not verify, not overwriting it: {e}")
            })?;
            let merged = DevicePrivacyState::merge(stored.state(), mine.state())
                .map_err(|e| e.to_string())?;
            DevicePrivacy::from_state(merged)
        }
    };
    store
        .put_with_key(&written.to_json().into(), &PRIVACY_KEY.into())
        .map_err(|e| format!("could not save the privacy state: {}", describe(e)))?;
    committed(&tx)
        .await
        .map_err(|e| format!("could not save the privacy state: {e}"))?;
    db.close();
    Ok(written)
}
