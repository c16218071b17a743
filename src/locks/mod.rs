//! TEMPORARY stand-in for the lock state machine (being written separately); same interface.
#![allow(missing_docs)]
use std::collections::{BTreeMap, BTreeSet};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner(String);
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token(pub u64);
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum InvalidInput { #[error("{0}")] Key(String), #[error("{0}")] Owner(String) }
impl Key { pub fn parse(s: impl Into<String>) -> Result<Key, InvalidInput> { let s=s.into(); if s.is_empty()||s.len()>255||!s.bytes().all(|b| b.is_ascii_alphanumeric()||b"._:-".contains(&b)) {return Err(InvalidInput::Key("bad key".into()))} Ok(Key(s)) } pub fn as_str(&self)->&str{&self.0} }
impl Owner { pub fn parse(s: impl Into<String>) -> Result<Owner, InvalidInput> { let s=s.into(); if s.is_empty()||s.len()>255||!s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {return Err(InvalidInput::Owner("bad owner".into()))} Ok(Owner(s)) } pub fn as_str(&self)->&str{&self.0} }
impl TryFrom<String> for Key { type Error=InvalidInput; fn try_from(s:String)->Result<Self,InvalidInput>{Key::parse(s)} }
impl From<Key> for String { fn from(k:Key)->String{k.0} }
impl TryFrom<String> for Owner { type Error=InvalidInput; fn try_from(s:String)->Result<Self,InvalidInput>{Owner::parse(s)} }
impl From<Owner> for String { fn from(k:Owner)->String{k.0} }
impl std::fmt::Display for Key { fn fmt(&self,f:&mut std::fmt::Formatter<'_>)->std::fmt::Result{f.write_str(&self.0)} }
impl std::fmt::Display for Owner { fn fmt(&self,f:&mut std::fmt::Formatter<'_>)->std::fmt::Result{f.write_str(&self.0)} }
impl std::fmt::Display for Token { fn fmt(&self,f:&mut std::fmt::Formatter<'_>)->std::fmt::Result{write!(f,"{}",self.0)} }

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Acquire { key: Key, owner: Owner, ttl_ms: u64, now_ms: u64 },
    Renew { key: Key, token: Token, ttl_ms: Option<u64>, now_ms: u64 },
    Release { key: Key, token: Token, now_ms: u64 },
    ReleaseByOwner { key: Key, owner: Owner, now_ms: u64 },
    ForceRelease { key: Key, now_ms: u64 },
    Sweep { now_ms: u64 },
    RefreshLeases { now_ms: u64 },
}
impl Command {
    pub fn now_ms(&self)->u64{ match self { Command::Acquire{now_ms,..}|Command::Renew{now_ms,..}|Command::Release{now_ms,..}|Command::ReleaseByOwner{now_ms,..}|Command::ForceRelease{now_ms,..}|Command::Sweep{now_ms}|Command::RefreshLeases{now_ms} => *now_ms } }
    pub fn acquire(key:Key, owner:Owner, ttl_ms:u64, now_ms:u64)->Command{Command::Acquire{key,owner,ttl_ms,now_ms}}
    pub fn renew(key:Key, token:Token, ttl_ms:Option<u64>, now_ms:u64)->Command{Command::Renew{key,token,ttl_ms,now_ms}}
    pub fn release(key:Key, token:Token, now_ms:u64)->Command{Command::Release{key,token,now_ms}}
    pub fn release_by_owner(key:Key, owner:Owner, now_ms:u64)->Command{Command::ReleaseByOwner{key,owner,now_ms}}
    pub fn force_release(key:Key, now_ms:u64)->Command{Command::ForceRelease{key,now_ms}}
    pub fn sweep(now_ms:u64)->Command{Command::Sweep{now_ms}}
    pub fn refresh_leases(now_ms:u64)->Command{Command::RefreshLeases{now_ms}}
}
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant { pub key: Key, pub owner: Owner, pub token: Token, pub acquired_at_ms: u64, pub renewed_at_ms: u64, pub expires_at_ms: u64, pub ttl_ms: u64 }
impl Grant { pub fn is_live(&self, now_ms:u64)->bool{self.expires_at_ms>now_ms} }
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotReleased { NotHeld, TokenMismatch }
impl NotReleased { pub fn as_str(&self)->&'static str { match self { NotReleased::NotHeld=>"not_held", NotReleased::TokenMismatch=>"token_mismatch"} } }
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release { pub key: Key, pub released: bool, pub reason: Option<NotReleased>, pub at_ms: u64 }
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply { Granted(Grant), Released(Release), Swept{expired:u64}, Refreshed{leases:u64}, Refused(LockError), Nothing }
impl Reply { pub fn grant(&self)->Option<&Grant>{ match self { Reply::Granted(g)=>Some(g), _=>None } } }
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockError {
    #[error("lock {} is held by {} with token {}", holder.key, holder.owner, holder.token)] Held { holder: Grant },
    #[error("token {token} no longer holds {key}")] Lost { key: Key, token: Token, current: Option<Token> },
    #[error("{owner} does not hold {key}")] NotOwner { key: Key, owner: Owner },
}
#[derive(thiserror::Error, Debug)] #[error("{0}")] pub struct SnapshotError(String);
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot { pub now_ms: u64, pub grants: Vec<Grant> }
pub struct Applied { pub reply: Reply, pub changed: Vec<Key> }
pub struct Validation { pub valid: bool, pub current_token: Option<Token> }
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockTable { locks: BTreeMap<Key, Grant>, expiry: BTreeSet<(u64, Key)>, now_ms: u64 }
impl LockTable {
    fn put(&mut self, g: Grant) { if let Some(old)=self.locks.get(&g.key) { self.expiry.remove(&(old.expires_at_ms, old.key.clone())); } self.expiry.insert((g.expires_at_ms, g.key.clone())); self.locks.insert(g.key.clone(), g); }
    fn remove(&mut self, k:&Key) { if let Some(old)=self.locks.remove(k) { self.expiry.remove(&(old.expires_at_ms, old.key)); } }
    fn live(&self, k:&Key, now:u64)->Option<&Grant>{ self.locks.get(k).filter(|g| g.is_live(now)) }
    pub fn apply(&mut self, index:u64, cmd:&Command)->Applied{
        let now = cmd.now_ms().max(self.now_ms); self.now_ms=now;
        let rel = |key:&Key, released:bool, reason| Reply::Released(Release{key:key.clone(),released,reason,at_ms:now});
        match cmd {
            Command::Acquire{key,owner,ttl_ms,..} => match self.live(key,now).cloned() {
                Some(g) if &g.owner!=owner => Applied{reply:Reply::Refused(LockError::Held{holder:g}),changed:vec![]},
                Some(mut g) => { g.ttl_ms=*ttl_ms; g.expires_at_ms=now.saturating_add(*ttl_ms); g.renewed_at_ms=now; self.put(g.clone()); Applied{reply:Reply::Granted(g),changed:vec![key.clone()]} }
                None => { let g=Grant{key:key.clone(),owner:owner.clone(),token:Token(index),acquired_at_ms:now,renewed_at_ms:now,expires_at_ms:now.saturating_add(*ttl_ms),ttl_ms:*ttl_ms}; self.put(g.clone()); Applied{reply:Reply::Granted(g),changed:vec![key.clone()]} }
            },
            Command::Renew{key,token,ttl_ms,..} => match self.live(key,now).cloned() {
                Some(mut g) if g.token==*token => { g.ttl_ms=ttl_ms.unwrap_or(g.ttl_ms); g.expires_at_ms=now.saturating_add(g.ttl_ms); g.renewed_at_ms=now; self.put(g.clone()); Applied{reply:Reply::Granted(g),changed:vec![key.clone()]} }
                other => Applied{reply:Reply::Refused(LockError::Lost{key:key.clone(),token:*token,current:other.map(|g|g.token)}),changed:vec![]},
            },
            Command::Release{key,token,..} => match self.live(key,now).map(|g|g.token) {
                Some(t) if t==*token => { self.remove(key); Applied{reply:rel(key,true,None),changed:vec![key.clone()]} }
                Some(_) => Applied{reply:rel(key,false,Some(NotReleased::TokenMismatch)),changed:vec![]},
                None => Applied{reply:rel(key,false,Some(NotReleased::NotHeld)),changed:vec![]},
            },
            Command::ReleaseByOwner{key,owner,..} => match self.live(key,now).map(|g|g.owner.clone()) {
                Some(o) if &o==owner => { self.remove(key); Applied{reply:rel(key,true,None),changed:vec![key.clone()]} }
                Some(_) => Applied{reply:Reply::Refused(LockError::NotOwner{key:key.clone(),owner:owner.clone()}),changed:vec![]},
                None => Applied{reply:rel(key,false,Some(NotReleased::NotHeld)),changed:vec![]},
            },
            Command::ForceRelease{key,..} => if self.live(key,now).is_some() { self.remove(key); Applied{reply:rel(key,true,None),changed:vec![key.clone()]} } else { Applied{reply:rel(key,false,Some(NotReleased::NotHeld)),changed:vec![]} },
            Command::Sweep{..} => { let dead:Vec<Key>=self.expiry.iter().take_while(|(e,_)| *e<=now).map(|(_,k)|k.clone()).collect(); for k in &dead { self.remove(k); } Applied{reply:Reply::Swept{expired:dead.len() as u64},changed:dead} }
            Command::RefreshLeases{..} => { let mut changed=vec![]; let gs:Vec<Grant>=self.locks.values().filter(|g| g.is_live(now)).cloned().collect(); for mut g in gs { let e=g.expires_at_ms.max(now.saturating_add(g.ttl_ms)); if e!=g.expires_at_ms { g.expires_at_ms=e; changed.push(g.key.clone()); self.put(g);} } Applied{reply:Reply::Refreshed{leases:changed.len() as u64},changed} }
        }
    }
    pub fn now_ms(&self)->u64{self.now_ms}
    pub fn len(&self)->usize{self.locks.len()}
    pub fn is_empty(&self)->bool{self.locks.is_empty()}
    pub fn stored(&self,k:&Key)->Option<&Grant>{self.locks.get(k)}
    pub fn get(&self,k:&Key,now:u64)->Option<&Grant>{self.live(k,now)}
    pub fn list(&self, prefix:&str, after:Option<&Key>, limit:usize, now:u64)->Vec<&Grant>{ self.locks.values().filter(|g| g.key.as_str().starts_with(prefix) && after.is_none_or(|a| &g.key>a) && g.is_live(now)).take(limit).collect() }
    pub fn validate(&self,k:&Key,t:Token,now:u64)->Validation{ let cur=self.live(k,now).map(|g|g.token); Validation{valid:cur==Some(t),current_token:cur} }
    pub fn grants(&self)->impl Iterator<Item=&Grant>{self.locks.values()}
    pub fn next_expiry_ms(&self)->Option<u64>{self.expiry.iter().next().map(|(e,_)|*e)}
    pub fn to_snapshot(&self)->TableSnapshot{TableSnapshot{now_ms:self.now_ms,grants:self.locks.values().cloned().collect()}}
    pub fn from_snapshot(s:TableSnapshot)->Result<LockTable,SnapshotError>{Self::from_parts(s.now_ms,s.grants)}
    pub fn from_parts(now_ms:u64, grants: impl IntoIterator<Item=Grant>)->Result<LockTable,SnapshotError>{ let mut t=LockTable{now_ms,..Default::default()}; for g in grants { if t.locks.contains_key(&g.key) { return Err(SnapshotError(format!("duplicate key {}", g.key))); } t.put(g);} Ok(t) }
}
impl std::fmt::Display for Command { fn fmt(&self,f:&mut std::fmt::Formatter<'_>)->std::fmt::Result{write!(f,"{self:?}")} }
impl std::fmt::Display for Reply { fn fmt(&self,f:&mut std::fmt::Formatter<'_>)->std::fmt::Result{write!(f,"{self:?}")} }
