//! The `prisoners` table: the agents this warden serves and whether they are paused.

use rusqlite::{params, OptionalExtension, Row};

use super::requests::text_enum;
use super::{Store, StoreError, Timestamp};

text_enum! {
    /// What the operator has done to a prisoner.
    PrisonerState {
        Active = "active",
        /// New calls wait until resumed.
        Paused = "paused",
        /// The kill switch was used; calls are denied.
        Killed = "killed",
        /// No longer in the configuration.
        Gone = "gone",
    }
}

/// A stored prisoner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prisoner {
    pub name: String,
    pub socket: String,
    /// Docker container name or id, when known.
    pub container: Option<String>,
    pub state: PrisonerState,
    pub updated_at: Timestamp,
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Prisoner> {
    Ok(Prisoner {
        name: r.get(0)?,
        socket: r.get(1)?,
        container: r.get(2)?,
        state: r.get(3)?,
        updated_at: Timestamp(r.get(4)?),
    })
}

impl Store {
    /// Records a configured prisoner's socket and container, keeping its state if it
    /// is already known (a restart does not un-pause or un-kill), else `active`.
    pub fn upsert_prisoner(
        &self,
        name: &str,
        socket: &str,
        container: Option<&str>,
        at: Timestamp,
    ) -> Result<Prisoner, StoreError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO prisoners (name, socket, container, state, updated_at)
             VALUES (?1, ?2, ?3, 'active', ?4)
             ON CONFLICT(name) DO UPDATE SET socket = excluded.socket,
                 container = excluded.container, updated_at = excluded.updated_at,
                 state = CASE state WHEN 'gone' THEN 'active' ELSE state END",
            params![name, socket, container, at.0],
        )?;
        Ok(conn.query_row(
            "SELECT name, socket, container, state, updated_at FROM prisoners WHERE name = ?1",
            [name],
            from_row,
        )?)
    }

    /// Sets a known prisoner's state.
    pub fn set_prisoner_state(
        &self,
        name: &str,
        state: PrisonerState,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let changed = self.lock().execute(
            "UPDATE prisoners SET state = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, state, at.0],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                what: "prisoner",
                id: name.to_owned(),
            });
        }
        Ok(())
    }

    /// One prisoner by name.
    pub fn get_prisoner(&self, name: &str) -> Result<Option<Prisoner>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT name, socket, container, state, updated_at FROM prisoners WHERE name = ?1",
                [name],
                from_row,
            )
            .optional()?)
    }

    /// All prisoners by name.
    pub fn list_prisoners(&self) -> Result<Vec<Prisoner>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT name, socket, container, state, updated_at FROM prisoners ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
