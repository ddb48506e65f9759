//! IndexedDB (web-sys): the personal state, the privacy state, the upload queue, the client token
//! and the adopted global model, in one object store.
//!
//! A save runs in one readwrite transaction: read the stored record; if another tab wrote since
//! this one last loaded or saved (the revision moved), merge three-way instead of overwriting (the
//! core's `PersonalState::to_write`, `DevicePrivacy::reconcile`); write; and report success only
//! when the transaction has completed, i.e. the data is durable.

use feedloop_core::contribution::DevicePrivacy;
use feedloop_core::outbox::{Outbox, QueuedUpload, Settled};
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
/// Released uploads waiting to be sent (`Outbox` JSON), checked against the privacy ledger on read.
const OUTBOX_KEY: &str = "outbox";
/// Small JSON records: the client token ("client") and the adopted global model ("global").
pub const CLIENT_KEY: &str = "client";
pub const GLOBAL_KEY: &str = "global";
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
    // Nothing stored, or a record this version cannot read: this tab's state replaces it.
    let stored = stored.ok().flatten();
    let written = PersonalState::to_write(stored.as_ref(), base, mine);
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
    for key in [KEY, PRIVACY_KEY, OUTBOX_KEY, CLIENT_KEY, GLOBAL_KEY] {
        store.delete(&key.into()).map_err(describe)?;
    }
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

/// Saves the privacy state, merged with what other tabs stored (no spend or release is lost), and
/// queues `upload` in the same transaction: a release is recorded and queued together or not at
/// all. Returns what was written (state and queue), once it is durable.
pub async fn save_privacy(
    name: &str,
    mine: &DevicePrivacy,
    upload: Option<QueuedUpload>,
    now_ms: u64,
) -> StorageResult<(DevicePrivacy, Outbox)> {
    let db = open(name).await?;
    let tx = db
        .transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)
        .map_err(|e| format!("could not save the privacy state: {}", describe(e)))?;
    let store = tx.object_store(STORE).map_err(describe)?;
    let stored = request(&store.get(&PRIVACY_KEY.into()).map_err(describe)?).await?;
    let written = mine
        .reconcile(stored.as_string().as_deref())
        .map_err(|e| e.to_string())?;
    let stored_outbox = request(&store.get(&OUTBOX_KEY.into()).map_err(describe)?).await?;
    let mut outbox = read_outbox(&stored_outbox, &written);
    // Another tab may have withdrawn consent meanwhile: then the upload is not queued (its cost
    // stays recorded, which can only over-count).
    if let Some(upload) = upload.filter(|_| written.consented()) {
        outbox.push(upload, now_ms);
    }
    store
        .put_with_key(&written.to_json().into(), &PRIVACY_KEY.into())
        .map_err(|e| format!("could not save the privacy state: {}", describe(e)))?;
    store
        .put_with_key(&outbox.to_json().into(), &OUTBOX_KEY.into())
        .map_err(|e| format!("could not save the upload queue: {}", describe(e)))?;
    committed(&tx)
        .await
        .map_err(|e| format!("could not save the privacy state: {e}"))?;
    db.close();
    Ok((written, outbox))
}

/// The stored queue, keeping only uploads the stored ledger recorded (see `Outbox::from_json`).
fn read_outbox(value: &JsValue, privacy: &DevicePrivacy) -> Outbox {
    value
        .as_string()
        .and_then(|json| Outbox::from_json(&json, &privacy.state().ledger).ok())
        .unwrap_or_default()
}

/// Changes the stored queue in one transaction (read, `change`, write) and returns it with what
/// `change` settled. Another tab's sends in between are not lost: the queue is re-read here.
pub async fn update_outbox(
    name: &str,
    change: impl FnOnce(&mut Outbox) -> Vec<Settled>,
) -> StorageResult<(Outbox, Vec<Settled>)> {
    let db = open(name).await?;
    let tx = db
        .transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)
        .map_err(|e| format!("could not update the upload queue: {}", describe(e)))?;
    let store = tx.object_store(STORE).map_err(describe)?;
    let privacy = request(&store.get(&PRIVACY_KEY.into()).map_err(describe)?).await?;
    let Some(privacy) = privacy
        .as_string()
        .and_then(|json| DevicePrivacy::from_json(&json).ok())
    else {
        // Nothing was ever released from this device: nothing can be queued.
        db.close();
        return Ok((Outbox::new(), Vec::new()));
    };
    let stored = request(&store.get(&OUTBOX_KEY.into()).map_err(describe)?).await?;
    let mut outbox = read_outbox(&stored, &privacy);
    let settled = change(&mut outbox);
    store
        .put_with_key(&outbox.to_json().into(), &OUTBOX_KEY.into())
        .map_err(|e| format!("could not update the upload queue: {}", describe(e)))?;
    committed(&tx)
        .await
        .map_err(|e| format!("could not update the upload queue: {e}"))?;
    db.close();
    Ok((outbox, settled))
}

/// A small JSON record (`CLIENT_KEY`, `GLOBAL_KEY`), if stored.
pub async fn load_json<T: serde::de::DeserializeOwned>(
    name: &str,
    key: &str,
) -> StorageResult<Option<T>> {
    let db = open(name).await?;
    let tx = db.transaction_with_str(STORE).map_err(describe)?;
    let store = tx.object_store(STORE).map_err(describe)?;
    let value = request(&store.get(&key.into()).map_err(describe)?).await?;
    db.close();
    Ok(value
        .as_string()
        .and_then(|json| serde_json::from_str(&json).ok()))
}

/// Stores a small JSON record durably.
pub async fn save_json<T: serde::Serialize>(name: &str, key: &str, value: &T) -> StorageResult<()> {
    let json = serde_json::to_string(value).map_err(|e| e.to_string())?;
    let db = open(name).await?;
    let tx = db
        .transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)
        .map_err(describe)?;
    let store = tx.object_store(STORE).map_err(describe)?;
    store
        .put_with_key(&json.into(), &key.into())
        .map_err(|e| format!("could not save {key}: {}", describe(e)))?;
    committed(&tx)
        .await
        .map_err(|e| format!("could not save {key}: {e}"))?;
    db.close();
    Ok(())
}
