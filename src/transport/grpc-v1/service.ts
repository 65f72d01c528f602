/**
 * The legacy `hashmailrpc.HashMail` service definition for grpc-js, built on
 * our codec. Server, `hashmail pipe` and tests share it, so client and server
 * agree on the wire by construction and the proto file stays the reference.
 */
import { makeGenericClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import {
  CIPHER_INIT_SUCCESS,
  decodeCipherBox,
  decodeCipherBoxAuth,
  decodeCipherBoxDesc,
  decodeCipherInitResp,
  decodeEmpty,
  encodeCipherBox,
  encodeCipherBoxAuth,
  encodeCipherBoxDesc,
  encodeOutgoingCipherBox,
  EMPTY_MESSAGE,
  type CipherBox,
  type CipherBoxAuth,
  type CipherBoxDesc,
  type OutgoingCipherBox,
} from './codec.js';

export const SERVICE_PATH = '/hashmailrpc.HashMail';

/** What NewCipherBox answers; the server always sends `success`. */
export interface CipherInitResp {
  success: boolean;
}

export const hashMailService = {
  newCipherBox: {
    path: `${SERVICE_PATH}/NewCipherBox`,
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: CipherBoxAuth) => encodeCipherBoxAuth(v),
    requestDeserialize: (b: Buffer) => decodeCipherBoxAuth(b),
    responseSerialize: (v: CipherInitResp) => (v.success ? CIPHER_INIT_SUCCESS : EMPTY_MESSAGE),
    responseDeserialize: (b: Buffer) => decodeCipherInitResp(b),
  },
  delCipherBox: {
    path: `${SERVICE_PATH}/DelCipherBox`,
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: CipherBoxAuth) => encodeCipherBoxAuth(v),
    requestDeserialize: (b: Buffer) => decodeCipherBoxAuth(b),
    responseSerialize: () => EMPTY_MESSAGE,
    responseDeserialize: (b: Buffer) => decodeEmpty(b),
  },
  sendStream: {
    path: `${SERVICE_PATH}/SendStream`,
    requestStream: true,
    responseStream: false,
    requestSerialize: (v: CipherBox) => encodeCipherBox(v),
    requestDeserialize: (b: Buffer) => decodeCipherBox(b),
    responseSerialize: (v: CipherBoxDesc) => encodeCipherBoxDesc(v),
    responseDeserialize: (b: Buffer) => decodeCipherBoxDesc(b),
  },
  recvStream: {
    path: `${SERVICE_PATH}/RecvStream`,
    requestStream: false,
    responseStream: true,
    requestSerialize: (v: CipherBoxDesc) => encodeCipherBoxDesc(v),
    requestDeserialize: (b: Buffer) => decodeCipherBoxDesc(b),
    responseSerialize: (v: OutgoingCipherBox) => encodeOutgoingCipherBox(v),
    responseDeserialize: (b: Buffer) => decodeCipherBox(b),
  },
} satisfies ServiceDefinition;

/** A grpc-js client class for the legacy service (methods: newCipherBox, delCipherBox, sendStream, recvStream). */
export const HashMailClient = makeGenericClientConstructor(hashMailService, 'HashMail');
