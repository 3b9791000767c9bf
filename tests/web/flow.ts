// The flow every Connect client of the tests runs: add → wrong code → right code → again →
// remove → verify, with the outcome of each step (OK or the Connect error's code name).
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { ZITADELUsers } from "./gen/zitadel/resources/user/v3alpha/user_service_pb";

export async function flow(transport: Transport, token: string, number: string): Promise<string[]> {
  const client = createClient(ZITADELUsers, transport);
  const headers = { authorization: `Bearer ${token}` };
  const outcome = async (call: () => Promise<unknown>): Promise<string> => {
    try {
      await call();
      return "OK";
    } catch (e) {
      return Code[ConnectError.from(e).code];
    }
  };
  const added = await client.addOTPSMSAuthenticator(
    { id: "alice", phone: { number, verification: { case: "returnCode", value: {} } } },
    { headers },
  );
  const code = added.verificationCode ?? "";
  const wrong = [...code].map((c) => (c === "0" ? "1" : "0")).join("");
  const verify = (code: string) => () =>
    client.verifyOTPSMSRegistration({ id: "alice", otpSmsId: added.otpSmsId, code }, { headers });
  return [
    added.otpSmsId !== "" && code !== "" ? "OK" : "no id or code",
    await outcome(verify(wrong)),
    await outcome(verify(code)),
    await outcome(verify(code)),
    await outcome(() =>
      client.removeOTPSMSAuthenticator({ id: "alice", otpSmsId: added.otpSmsId }, { headers }),
    ),
    await outcome(verify(code)),
  ];
}
