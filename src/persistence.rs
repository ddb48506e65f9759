//! Persistence of what the device learned: `restore`, `save`, `stateBytes`, `storageAvailable`,
//! `clearStorage` (IndexedDB itself is [`crate::indexeddb`]; how stored and in-memory states are
//! reconciled is the core's: `PersonalState::to_write` / `after_save`, `DevicePrivacy::reconcile`).

use std::cell::RefCell;
use std::rc::Rc;

use feedloop_core::PersonalState;
use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::error::Error;
use crate::indexeddb;
use crate::{sync, Inner, Ranker};

#[wasm_bindgen(js_class = WasmRanker)]
impl Ranker {
    /// The personal state's bytes, as `save` stores them.
    #[wasm_bindgen(js_name = stateBytes)]
    pub fn state_bytes(&self) -> Uint8Array {
        Uint8Array::from(self.inner.borrow().feedback.state().to_bytes().as_slice())
    }

    /// Whether this environment has IndexedDB.
    #[wasm_bindgen(js_name = storageAvailable)]
    pub fn storage_available() -> bool {
        indexeddb::available()
    }

    /// Loads the state saved in IndexedDB database `name`; resolves to whether there was one.
    /// Rejects with an `Error` if storage fails (the ranker keeps working in memory).
    #[wasm_bindgen(unchecked_return_type = "Promise<boolean>")]
    pub fn restore(&self, name: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let parameters = inner.borrow().saved.learning.delta.len();
            // Privacy first: spending recorded by earlier visits must never be forgotten.
            if let Some(mut stored) = indexeddb::load_privacy(&name)
                .await
                .map_err(Error::Storage)?
            {
                let mut inner = inner.borrow_mut();
                // The page's policy applies; the stored spending and ledger stay.
                stored.set_policy(inner.privacy.state().policy.clone());
                inner.privacy = stored;
            }
            sync::restore_sync_state(&inner, &name).await?;
            let stored = indexeddb::load(&name, parameters)
                .await
                .map_err(Error::Storage)?;
            let Some(stored) = stored else {
                return Ok(JsValue::FALSE);
            };
            let mut inner = inner.borrow_mut();
            inner
                .feedback
                .set_state(stored.clone())
                .map_err(Error::from)?;
            inner.saved = stored;
            // What was learned applies on top of the adopted global model.
            sync::reapply_global(&mut inner)?;
            Ok(JsValue::TRUE)
        })
    }

    /// Saves the personal state to IndexedDB database `name`, merging with what other tabs saved
    /// meanwhile; resolves with the stored revision once the write is durable. Rejects with an
    /// `Error` on a storage failure; nothing is lost: the state stays in memory for the next save.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn save(&self, name: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let revision = save_personal(&inner, &name).await?;
            Ok(JsValue::from_f64(revision as f64))
        })
    }

    /// Deletes the state saved in IndexedDB database `name`.
    #[wasm_bindgen(js_name = clearStorage, unchecked_return_type = "Promise<void>")]
    pub fn clear_storage(name: String) -> Promise {
        future_to_promise(async move {
            indexeddb::clear(&name).await.map_err(Error::Storage)?;
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// Saves the personal state (see `save`); returns the stored revision.
pub(crate) async fn save_personal(inner: &Rc<RefCell<Inner>>, name: &str) -> Result<u64, Error> {
    let (base, mine) = {
        let inner = inner.borrow();
        (inner.saved.clone(), inner.feedback.state().clone())
    };
    let written = indexeddb::save(name, &base, &mine)
        .await
        .map_err(Error::Storage)?;
    let mut inner = inner.borrow_mut();
    let current = inner.feedback.state().clone();
    let adopted = PersonalState::after_save(&written, &mine, &current);
    inner.feedback.set_state(adopted)?;
    let revision = written.revision;
    inner.saved = written;
    Ok(revision)
}
